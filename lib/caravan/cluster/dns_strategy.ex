defmodule Caravan.Cluster.DnsStrategy do
  @moduledoc """
  A libcluster strategy that finds peers in DNS SRV records (Consul's DNS
  interface, a Kubernetes headless service, any SRV source) and connects to
  them. Each SRV record gives a node name `:"<node_sname>-<port>@<target>"`,
  whose distribution port is the SRV port (see `Caravan.Epmd`).

  ## With libcluster

      config :libcluster,
        topologies: [
          caravan: [
            strategy: Caravan.Cluster.DnsStrategy,
            config: [
              query: "_app._tcp.service.consul",
              node_sname: "app",
              nameservers: ["127.0.0.1:8600"],
              poll_interval: 5_000
            ]
          ]
        ]

  ## Without libcluster

      children = [
        {Caravan.Cluster.DnsStrategy,
         query: "_app._tcp.service.consul", node_sname: "app", nameservers: ["127.0.0.1:8600"]}
      ]

  ## Options

    * `:query` (required) - the SRV name to look up, e.g.
      `"_app._tcp.service.consul"` or `"app.service.consul"`. Caravan 1.x's
      `:consul_service` is accepted as an alias.
    * `:node_sname` (required) - the name part before the port, e.g. `"app"`
      for nodes named `app-4370@host`.
    * `:poll_interval` - ms between lookups. Default 5000.
    * `:nameservers` - e.g. `["127.0.0.1:8600"]` (see `Caravan.DNS`).
      Default `[]`: the system's resolv.conf.
    * `:timeout` - bound on one lookup, ms. Default 2000 (at most
      `:poll_interval`).
    * `:connect_timeout` - bound on one connect, ms. Default 10000.
    * `:connect_concurrency` - connects in flight at once. Default 16.
    * `:dns_client` - a `Caravan.DnsClient`. Default
      `Caravan.DnsClient.Native`.
    * `:topology`, `:connect`, `:disconnect`, `:list_nodes` - given by
      libcluster; when started without it: `:caravan`,
      `{:net_kernel, :connect_node, []}`, `{:erlang, :disconnect_node, []}`,
      `{:erlang, :nodes, [:connected]}`.

  ## Behaviour

  The first lookup runs right after start without blocking the supervisor,
  then one every `:poll_interval` ms. Each poll runs in its own process:
  new nodes (not this node, not in `list_nodes`) are connected in parallel,
  each bounded by `:connect_timeout`, and a slow poll never delays the
  timer. A lookup that fails (timeout, SERVFAIL, ...) changes nothing: the
  cluster stays as it is, a warning is logged once, and the next poll tries
  again. An invalid config logs an error and the strategy returns `:ignore`
  instead of taking the supervisor down.

  Logs are prefixed `[caravan]`: info when a node is connected or a failed
  lookup works again, warning once per failure streak, debug otherwise.
  """
  use GenServer
  require Logger

  alias Caravan.Cluster.Config

  @doc """
  A child spec. The id is the `:topology` (libcluster gives each topology
  its own) or `#{inspect(__MODULE__)}`.
  """
  def child_spec(arg) do
    id =
      case arg do
        [%{topology: topology}] when not is_nil(topology) -> topology
        opts when is_list(opts) -> Keyword.get(opts, :topology, __MODULE__)
        _ -> __MODULE__
      end

    %{id: id, start: {__MODULE__, :start_link, [arg]}}
  end

  @doc """
  Starts the strategy. `[state]` is libcluster's call, with a
  `%Cluster.Strategy.State{}`; a keyword list starts it without libcluster
  (options in the module doc).

  Returns `{:ok, pid}`, or `:ignore` after logging an error when the config
  is invalid.
  """
  @spec start_link([map()] | keyword()) :: GenServer.on_start()
  def start_link([%{config: _} = state]), do: GenServer.start_link(__MODULE__, state)
  def start_link(opts) when is_list(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc """
  The node name for an SRV record: `{:ok, :"<node_sname>-<port>@<target>"}`,
  or `{:error, {kind, message}}` when the result would not be a valid node
  name whose distribution port is `port` (so no atom is made from junk).
  `host` must be an IP literal or a host name (RFC 1123: dot-separated
  labels of letters, digits and inner `-`); anything else, such as `"."`
  (RFC 2782's "no service here"), `_` or escaped bytes, is `:invalid_host`.

      iex> Caravan.Cluster.DnsStrategy.node_name("app", 4370, "web1.node.dc1.consul")
      {:ok, :"app-4370@web1.node.dc1.consul"}
      iex> Caravan.Cluster.DnsStrategy.node_name("app", 0, "web1")
      {:error, {:port_out_of_range, ~s(node name "app-0@web1" ends its name part in 0, which is not a port in 1..65535)}}
  """
  @host_label ~r/\A[0-9A-Za-z](?:[0-9A-Za-z-]{0,61}[0-9A-Za-z])?\z/

  @spec node_name(String.t(), :inet.port_number(), String.t()) ::
          {:ok, node()} | {:error, {atom(), String.t()}}
  def node_name(sname, port, host)
      when is_binary(sname) and is_integer(port) and is_binary(host) do
    name = "#{sname}-#{port}@#{host}"

    cond do
      not valid_host?(host) ->
        {:error,
         {:invalid_host,
          "SRV target #{inspect(host)} is not a host name or IP address (expected " <>
            "dot-separated labels of letters, digits and inner '-' (RFC 1123), or an IP literal)"}}

      true ->
        case Caravan.Epmd.fetch_dist_port(name) do
          {:ok, ^port} ->
            {:ok, String.to_atom(name)}

          {:ok, other} ->
            {:error, {:port_mismatch, "#{name} would listen on #{other}, not #{port}"}}

          {:error, _} = error ->
            error
        end
    end
  end

  def node_name(sname, port, host),
    do:
      {:error,
       {:invalid_record, "expected a port and a host, got: #{inspect({sname, port, host})}"}}

  # An IP literal, or a host name (RFC 1123): labels of 1..63 letters,
  # digits and '-' (not at either end), at most 253 characters. Rules out
  # what DNS can carry but no host is called: spaces, '_', escaped bytes,
  # non-ASCII, empty labels and the root "." (RFC 2782's "no service here").
  defp valid_host?(host) do
    match?({:ok, _}, :inet.parse_strict_address(:binary.bin_to_list(host))) or
      (byte_size(host) <= 253 and
         host |> String.split(".") |> Enum.all?(&(&1 =~ @host_label)))
  end

  # -- GenServer ------------------------------------------------------------

  @impl GenServer
  def init(arg) do
    case Config.new(arg) do
      {:ok, config} ->
        send(self(), :poll)
        {:ok, %{config: config, poll: nil, warned: MapSet.new()}}

      {:error, message} ->
        Logger.error("[caravan] #{inspect(__MODULE__)} not started: #{message}")
        :ignore
    end
  end

  @impl GenServer
  def handle_info(:poll, %{config: config} = state) do
    Process.send_after(self(), :poll, config.poll_interval)

    if state.poll do
      log(:debug, config, "previous poll still running; skipping this one")
      {:noreply, state}
    else
      {_pid, ref} = spawn_monitor(fn -> exit({:caravan_poll, poll(config)}) end)
      {:noreply, %{state | poll: ref}}
    end
  end

  def handle_info({:DOWN, ref, :process, _pid, reason}, %{poll: ref} = state) do
    state = %{state | poll: nil}

    case reason do
      {:caravan_poll, result} ->
        {:noreply, report(result, state)}

      other ->
        {:noreply, warn_once(state, :poll_crash, "poll crashed: #{inspect(other)}")}
    end
  end

  # A late reply of a lookup that timed out on the Elixir side.
  def handle_info({:caravan_srv, _ref, _answer}, state), do: {:noreply, state}

  def handle_info(_other, state), do: {:noreply, state}

  # -- One poll (runs in its own process) ------------------------------------

  defp poll(config) do
    case get_nodes(config) do
      {:ok, peers} ->
        {nodes, invalid} = node_names(peers, config.node_sname)
        connected = MapSet.new(list_nodes(config))
        new = Enum.reject(nodes, &(&1 == node() or MapSet.member?(connected, &1)))
        {:ok, %{found: nodes, invalid: invalid, connects: connect_all(new, config)}}

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp get_nodes(%Config{dns_client: client, query: query} = config) do
    result =
      if function_exported?(client, :get_nodes, 2),
        do: client.get_nodes(query, nameservers: config.nameservers, timeout: config.timeout),
        else: client.get_nodes(query)

    case result do
      {:ok, peers} when is_list(peers) -> {:ok, peers}
      {:error, _} = error -> error
      peers when is_list(peers) -> {:ok, peers}
      other -> {:error, {:bad_dns_client_result, inspect(other)}}
    end
  rescue
    e -> {:error, {:dns_client_raised, Exception.message(e)}}
  end

  defp node_names(peers, sname) do
    Enum.reduce(peers, {[], []}, fn peer, {nodes, invalid} ->
      result =
        case peer do
          {port, host} -> node_name(sname, port, to_string(host))
          other -> {:error, {:invalid_record, inspect(other)}}
        end

      case result do
        {:ok, node} -> {[node | nodes], invalid}
        {:error, {_kind, message}} -> {nodes, [message | invalid]}
      end
    end)
    |> then(fn {nodes, invalid} -> {nodes |> Enum.uniq() |> Enum.sort(), invalid} end)
  end

  defp list_nodes(%Config{list_nodes: {m, f, a}}), do: apply(m, f, a)

  defp connect_all([], _config), do: []

  defp connect_all(nodes, %Config{connect: {m, f, a}} = config) do
    nodes
    |> Task.async_stream(
      fn node ->
        try do
          apply(m, f, a ++ [node])
        catch
          kind, reason -> {:raised, Exception.format_banner(kind, reason)}
        end
      end,
      max_concurrency: config.connect_concurrency,
      timeout: config.connect_timeout,
      on_timeout: :kill_task,
      ordered: true
    )
    |> Enum.zip(nodes)
    |> Enum.map(fn
      {{:ok, result}, node} -> {node, result}
      {{:exit, :timeout}, node} -> {node, :timeout}
      {{:exit, reason}, node} -> {node, {:exit, reason}}
    end)
  end

  # -- Reporting (in the strategy process, which keeps what it warned of) ----

  defp report({:error, reason}, %{config: config} = state) do
    warn_once(
      state,
      :lookup,
      "lookup of #{inspect(config.query)} failed (#{format_reason(reason)}); " <>
        "keeping the cluster as it is, retrying every #{config.poll_interval} ms"
    )
  end

  defp report(
         {:ok, %{found: found, invalid: invalid, connects: connects}},
         %{config: config} = state
       ) do
    state = recovered(state, :lookup, "lookup of #{inspect(config.query)} works again")

    log(
      :debug,
      config,
      "#{inspect(config.query)} lists #{length(found)} node(s): #{inspect(found)}"
    )

    # Forget connect warnings about nodes DNS no longer lists, so the set
    # of warnings stays as small as the answer.
    warned =
      MapSet.reject(state.warned, fn
        {:connect, node} -> node not in found
        _other -> false
      end)

    state = %{state | warned: warned}

    state =
      case invalid do
        [] ->
          %{state | warned: MapSet.delete(state.warned, :invalid_records)}

        _ ->
          warn_once(
            state,
            :invalid_records,
            "skipped SRV records: #{Enum.join(invalid, "; ")}"
          )
      end

    Enum.reduce(connects, state, fn
      {node, true}, state ->
        Logger.info("[caravan] topology #{config.topology}: connected to #{node}")
        %{state | warned: MapSet.delete(state.warned, {:connect, node})}

      {node, :ignored}, state ->
        log(:debug, config, "connect to #{node} ignored (this node is not distributed)")
        state

      {node, failure}, state ->
        warn_once(state, {:connect, node}, "cannot connect to #{node}: #{inspect(failure)}")
    end)
  end

  defp warn_once(%{config: config, warned: warned} = state, key, message) do
    if MapSet.member?(warned, key) do
      log(:debug, config, message)
      state
    else
      Logger.warning("[caravan] topology #{config.topology}: #{message}")
      %{state | warned: MapSet.put(warned, key)}
    end
  end

  defp recovered(%{config: config, warned: warned} = state, key, message) do
    if MapSet.member?(warned, key) do
      Logger.info("[caravan] topology #{config.topology}: #{message}")
      %{state | warned: MapSet.delete(warned, key)}
    else
      state
    end
  end

  defp log(:debug, config, message),
    do: Logger.debug("[caravan] topology #{config.topology}: #{message}")

  defp format_reason({kind, message}) when is_atom(kind) and is_binary(message),
    do: "#{kind}: #{message}"

  defp format_reason(reason), do: inspect(reason)
end
