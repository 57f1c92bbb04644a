defmodule Caravan.Epmd.Probe do
  @moduledoc false
  # Finds out why a node cannot be reached, in words, by doing what the
  # epmd layer does (its port from Caravan.Epmd.Ports, its host from
  # Caravan.Epmd.HostResolver) and one TCP connect. Used by Caravan.Cluster
  # (a failed connect explained) and Caravan.Diagnose, knowing neither.
  # Bounded: the lookups by the resolver's timeout, TCP by `:tcp_timeout`.

  @default_tcp_timeout 1_000

  @typedoc """
  What was found about one node: its port and where it came from
  (`t:Caravan.Epmd.Ports.source/0`), the host lookup,
  the TCP probe of `ip:port`, and whether it is connected now.
  """
  @type t :: %{
          node: node(),
          port: :inet.port_number() | nil,
          port_source: Caravan.Epmd.Ports.source() | nil,
          host: String.t() | nil,
          resolve: {:ok, :inet.ip_address()} | {:error, term()} | :skipped,
          tcp: :open | {:error, term()} | :skipped,
          connected?: boolean(),
          self?: boolean(),
          problem: nil | String.t()
        }

  @doc """
  Probes `node` (an atom): resolves its host the way the epmd module does
  (`Caravan.Epmd.HostResolver`), opens and closes one TCP connection to
  `ip:port` (bounded by `opts[:tcp_timeout]`, ms, default 1000), and looks
  at `Node.list/1`. With `expect_connected: false` (a check from outside
  the cluster) a node that accepts TCP is fine. Returns `t:t/0`; `:problem` is `nil` when nothing is
  wrong, else one sentence naming the cause and the next step.
  """
  @spec check(node(), keyword()) :: t()
  def check(node, opts \\ []) do
    tcp_timeout = Keyword.get(opts, :tcp_timeout, @default_tcp_timeout)
    connected? = node in Node.list([:visible, :hidden])
    self? = node == node()
    base = %{node: node, port: nil, port_source: nil, host: nil, resolve: :skipped}
    base = Map.merge(base, %{tcp: :skipped, connected?: connected?, self?: self?, problem: nil})

    with {:ok, _} <- Caravan.Epmd.fetch_dist_port(node),
         [name, host] <- String.split(Atom.to_string(node), "@", parts: 2),
         {:ok, port, source} <- Caravan.Epmd.Ports.peer_port(name, host) do
      probe = %{base | port: port, port_source: source, host: host}

      if self? do
        probe
      else
        resolve = Caravan.Epmd.HostResolver.resolve(host, family())
        probe = %{probe | resolve: resolve}

        probe =
          case resolve do
            {:ok, ip} -> %{probe | tcp: tcp(ip, port, tcp_timeout)}
            {:error, _} -> probe
          end

        expect = Keyword.get(opts, :expect_connected, true)
        %{probe | problem: problem(Map.put(probe, :expect_connected?, expect))}
      end
    else
      {:error, {kind, message}} ->
        if Caravan.Epmd.Ports.refusal?(kind),
          do: %{base | problem: message},
          else: %{base | problem: "#{node} is not a Caravan node name (#{message})"}

      _no_host ->
        %{
          base
          | problem:
              "#{node} has no host part; Caravan node names look like app-4370@host " <>
                "(see Caravan.Epmd)"
        }
    end
  end

  @doc """
  Why a connect to `node` failed, for a log line: what the connect
  returned (`failure`), then the `:problem` of `check/2`, or, when the
  probe finds nothing wrong, that the node answers now (the failure was
  transient, or it came up since). Takes up to the probe's bounds: call it
  outside a process that must stay responsive.
  """
  @spec why(node(), term(), keyword()) :: String.t()
  def why(node, failure, opts \\ []) do
    found =
      case check(node, opts) do
        %{problem: nil, connected?: true} -> "#{node} is connected now"
        %{problem: nil} -> "#{node} accepts TCP now; the failure was transient"
        %{problem: problem} -> problem
      end

    failure(failure) <> found
  end

  defp failure(false), do: ""
  defp failure(:timeout), do: "no answer within connect_timeout; "
  defp failure(other), do: "#{inspect(other)}; "

  @doc """
  Where the nameservers of the epmd module (host lookups of node names)
  come from: `{nameservers, source}`, source `"-caravan_nameservers"`,
  `"CARAVAN_NAMESERVERS"`, or `nil` (none: the OS resolver is asked).
  """
  @spec nameservers() :: {[String.t()], String.t() | nil}
  def nameservers do
    {nameservers, _timeout} = Caravan.Epmd.HostResolver.config()

    source =
      cond do
        match?({:ok, _}, :init.get_argument(:caravan_nameservers)) -> "-caravan_nameservers"
        :os.getenv(~c"CARAVAN_NAMESERVERS") != false -> "CARAVAN_NAMESERVERS"
        true -> nil
      end

    {nameservers, source}
  end

  @doc """
  Whether peers of a topology with `node_sname` can reach `node` (this
  node) by name: they dial `:"<node_sname>-<port>@<host>"` (SRV port and
  target), or `:"<node_sname>@<host>"` with `node_port` `:srv`. Returns
  `nil` when the name fits (or the node is not distributed, or started
  with `-dist_listen false`: never dialed), else a sentence naming the
  name peers will dial and the fix.
  """
  @spec name_mismatch(node(), String.t() | nil, :name | :srv) :: nil | String.t()
  def name_mismatch(node, sname, node_port \\ :name)
  def name_mismatch(:nonode@nohost, _sname, _node_port), do: nil
  # record_type :a/:aaaa/:ip topologies name nodes <node_basename>@<ip>.
  def name_mismatch(_node, nil, _node_port), do: nil

  def name_mismatch(node, sname, :srv) do
    case String.split(Atom.to_string(node), "@", parts: 2) do
      [name, host] when name != sname -> "this node is #{node}, but peers dial #{sname}@#{host}"
      _ -> nil
    end
  end

  def name_mismatch(node, sname, :name) do
    # A -dist_listen false node listens nowhere and is never dialed: its
    # name may be anything.
    with false <- :init.get_argument(:dist_listen) == {:ok, [[~c"false"]]},
         [name, host] <- String.split(Atom.to_string(node), "@", parts: 2),
         {:ok, port} <- Caravan.Epmd.fetch_dist_port(node) do
      expected = "#{sname}-#{port}@#{host}"

      cond do
        name == "#{sname}-#{port}" ->
          nil

        not String.match?(name, ~r/[0-9]\z/) ->
          "this node is #{node}, a name without a port: it listens on #{port}, but peers " <>
            "dial #{expected}; name it #{expected} (RELEASE_NODE in rel/env.sh.eex)"

        true ->
          "this node is #{node}, but peers dial #{expected} (node_sname #{inspect(sname)}): " <>
            "make the name part of the node name and the topology's :node_sname agree"
      end
    else
      _ -> nil
    end
  end

  # The problem, or nil, for a probe that got as far as a host lookup.
  defp problem(%{resolve: {:error, reason}, host: host}) do
    "host #{host} does not resolve (#{inspect(reason)}); " <> asked()
  end

  defp problem(%{tcp: {:error, reason}, resolve: {:ok, ip}, port: port} = probe) do
    where = "#{:inet.ntoa(ip)}:#{port}"

    case reason do
      :econnrefused ->
        "nothing listens on #{where} (connection refused): #{probe.node} is not running, " <>
          "or listens on another address or port"

      :timeout ->
        "no answer from #{where} (TCP connect timed out): a firewall drops the packets, " <>
          "or the host is down"

      other ->
        "cannot reach #{where} (#{inspect(other)})"
    end
  end

  defp problem(%{tcp: :open, connected?: false, expect_connected?: false}), do: nil

  defp problem(%{tcp: :open, connected?: false, resolve: {:ok, ip}, port: port} = probe) do
    if own_address?(ip, port) do
      "#{probe.host} resolves to #{:inet.ntoa(ip)}:#{port}, this node's own address and " <>
        "port (this node is #{node()}): either this node's name is not the one peers dial " <>
        "(#{probe.node}), or several nodes share one address; give each its own with " <>
        "-kernel inet_dist_use_interface '{a,b,c,d}'"
    else
      "#{:inet.ntoa(ip)}:#{port} accepts TCP but #{probe.node} is not connected: if a " <>
        "connect was tried, the distribution handshake failed: a different cookie " <>
        "(the peer logs \"Invalid challenge reply\"), or the node listening there has " <>
        "another name (check its -name / RELEASE_NODE and the topology's :node_sname)"
    end
  end

  defp problem(_probe), do: nil

  defp asked do
    case nameservers() do
      {[], _} ->
        "no -caravan_nameservers / CARAVAN_NAMESERVERS is configured, so the OS " <>
          "resolver was asked; for .consul names set CARAVAN_NAMESERVERS=<consul-ip>:8600 " <>
          "(rel/env.sh.eex) or -caravan_nameservers in vm.args"

      {list, source} ->
        "asked #{Enum.join(list, ", ")} (from #{source || "the boot config"}) and the OS " <>
          "resolver; check that the nameservers serve this name"
    end
  end

  # This node's own distribution address: its registered port, on
  # inet_dist_use_interface or any address.
  defp own_address?(ip, port) do
    case Caravan.Epmd.Client.names() do
      {:ok, [{_name, ^port}]} ->
        case :application.get_env(:kernel, :inet_dist_use_interface) do
          {:ok, ^ip} -> true
          {:ok, _other} -> false
          :undefined -> local_address?(ip)
        end

      _ ->
        false
    end
  end

  defp local_address?(ip) do
    case :inet.getifaddrs() do
      {:ok, ifs} -> Enum.any?(ifs, fn {_name, opts} -> {:addr, ip} in opts end)
      _ -> false
    end
  end

  defp tcp(ip, port, timeout) do
    with {:ok, socket} <- :gen_tcp.connect(ip, port, [:binary, active: false], timeout) do
      :gen_tcp.close(socket)
      :open
    end
  end

  # The family distribution uses: inet6 when -proto_dist names inet6_*.
  defp family do
    with {:ok, protos} <- :init.get_argument(:proto_dist),
         true <- Enum.any?(Enum.concat(protos), &List.starts_with?(&1, ~c"inet6")) do
      :inet6
    else
      _ -> :inet
    end
  end
end
