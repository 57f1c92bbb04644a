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
      `"_app._tcp.service.consul"`, `"app.service.dc1.consul"` or
      `"_epmd._tcp.app.default.svc.cluster.local"`; or a list of them, all
      looked up at each poll (the nodes found are the union). Caravan 1.x's
      `:consul_service` is accepted as an alias.
    * `:node_sname` (required) - the name part before the port, e.g. `"app"`
      for nodes named `app-4370@host`.
    * `:node_host` - the host part of each node name: `:auto` (default) the
      SRV target, except Consul `<hex>.addr.<dc>.consul` targets (Nomad
      jobs), which become their IP address; `:target` the SRV target as
      given (Caravan 1.x); `:ip` the target's IP address (decoded from
      `.addr.`, else the answer's additional section, else resolved).
      See `Caravan.DNS`.
    * `:poll_interval` - ms between lookups. Default 5000.
    * `:nameservers` - e.g. `["127.0.0.1:8600"]` (see `Caravan.DNS`).
      Default `[]`: the system's resolv.conf.
    * `:timeout` - bound on one lookup, ms. Default 2000 (at most
      `:poll_interval`).
    * `:prune` - disconnect nodes that DNS no longer lists. Default `false`
      (as Caravan 1.x). See "Pruning" below.
    * `:max_nodes` - the most nodes one poll takes from DNS. Default 1024.
      Node names become atoms, which are never collected: a poll creates at
      most `:max_nodes` new atoms, whatever the answer holds.
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
  the queries are asked in parallel, and new nodes (not this node, not in
  `list_nodes`) are connected in parallel, each bounded by
  `:connect_timeout`; a slow poll never delays the timer (the next poll is
  skipped while one still runs).

  A lookup that fails (timeout, SERVFAIL, REFUSED, a malformed answer)
  changes nothing: the cluster stays as it is, a warning is logged once per
  failure streak, and the next poll tries again. NXDOMAIN and NODATA mean
  "no instances". Records that cannot make a valid node name (bad target,
  port 0) are skipped with one warning. An invalid config logs an error and
  the strategy returns `:ignore` instead of taking the supervisor down.

  ## Pruning

  With `prune: true`, a node this strategy found in DNS before is
  disconnected (through the `:disconnect` MFA) once an authoritative answer
  no longer lists it: every query answered (NXDOMAIN and NODATA count) and
  no more than `:max_nodes` nodes. A failed lookup never disconnects
  anything, and nodes DNS never listed (a remote shell, another topology's
  nodes) are left alone. OTP's `global` connects nodes transitively, so a
  pruned node that another node still lists may come back; start nodes
  with `-connect_all false` if DNS is to be the only source of membership.

  ## Logs and telemetry

  Logs are prefixed `[caravan]`: info when a node is connected or pruned
  or a failed lookup works again, a warning once per failure streak, debug
  otherwise; a healthy, unchanged cluster logs nothing above debug. See
  `Caravan.Telemetry` for the events.
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
  def node_name(sname, port, host) do
    with {:ok, name} <- node_name_string(sname, port, host), do: {:ok, String.to_atom(name)}
  end

  # The checks of node_name/3, without making the atom.
  defp node_name_string(sname, port, host)
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
            {:ok, name}

          {:ok, other} ->
            {:error, {:port_mismatch, "#{name} would listen on #{other}, not #{port}"}}

          {:error, _} = error ->
            error
        end
    end
  end

  defp node_name_string(sname, port, host),
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

        {:ok,
         %{
           config: config,
           poll: nil,
           warned: MapSet.new(),
           known: MapSet.new(),
           # monitor ref => node, for connects in flight; queue: nodes waiting
           # for a free slot (connect_concurrency).
           connecting: %{},
           queue: []
         }}

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
      known = state.known
      {_pid, ref} = spawn_monitor(fn -> exit({:caravan_poll, poll(config, known)}) end)
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

  def handle_info({:DOWN, ref, :process, _pid, reason}, %{connecting: connecting} = state)
      when is_map_key(connecting, ref) do
    {node, connecting} = Map.pop(connecting, ref)

    result =
      case reason do
        {:caravan_connect, result} -> result
        other -> {:exit, other}
      end

    state = connect_done(%{state | connecting: connecting}, node, result)
    {:noreply, start_connects(state)}
  end

  # A late reply of a lookup that timed out on the Elixir side.
  def handle_info({:caravan_srv, _ref, _answer}, state), do: {:noreply, state}

  def handle_info(_other, state), do: {:noreply, state}

  # -- One poll (runs in its own process) ------------------------------------

  defp poll(config, known) do
    answers = lookup_all(config)
    errors = for {query, {:error, reason}} <- answers, do: {query, reason}
    peers = for {_query, {:ok, peers}} <- answers, peer <- peers, do: peer
    {names, invalid} = node_names(peers, config.node_sname)
    dropped = max(length(names) - config.max_nodes, 0)
    # The cap comes before String.to_atom/1: a poll makes at most
    # max_nodes new atoms, whatever the answer holds.
    nodes = names |> Enum.take(config.max_nodes) |> Enum.map(&String.to_atom/1)
    authoritative? = errors == [] and dropped == 0
    connected = MapSet.new(list_nodes(config))

    departed =
      if config.prune and authoritative?,
        do: known |> MapSet.difference(MapSet.new(nodes)) |> MapSet.intersection(connected),
        else: MapSet.new()

    %{
      found: nodes,
      answered: for({query, {:ok, _}} <- answers, do: query),
      errors: errors,
      invalid: invalid,
      dropped: dropped,
      authoritative?: authoritative?,
      new: Enum.reject(nodes, &(&1 == node() or MapSet.member?(connected, &1))),
      disconnects: disconnect_all(Enum.sort(departed), config)
    }
  end

  # Asks every query at once; [{query, {:ok, peers} | {:error, reason}}].
  defp lookup_all(%Config{queries: queries} = config) do
    queries
    |> Task.async_stream(&lookup(config, &1),
      max_concurrency: length(queries),
      # The client bounds itself; this only catches one that does not.
      timeout: config.timeout + 2_000,
      on_timeout: :kill_task
    )
    |> Enum.zip(queries)
    |> Enum.map(fn
      {{:ok, answer}, query} -> {query, answer}
      {{:exit, reason}, query} -> {query, {:error, {:dns_client_exit, inspect(reason)}}}
    end)
  end

  defp lookup(config, query) do
    started = System.monotonic_time()
    answer = get_nodes(config, query)

    {result, reason, count} =
      case answer do
        {:ok, peers} -> {:ok, nil, length(peers)}
        {:error, reason} -> {:error, reason, 0}
      end

    Caravan.Telemetry.execute(
      [:caravan, :lookup],
      %{duration: System.monotonic_time() - started, records: count},
      %{topology: config.topology, query: query, result: result, reason: reason}
    )

    answer
  end

  defp get_nodes(%Config{dns_client: client} = config, query) do
    result =
      if function_exported?(client, :get_nodes, 2),
        do:
          client.get_nodes(query,
            nameservers: config.nameservers,
            timeout: config.timeout,
            node_host: config.node_host
          ),
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

  # Valid node names as strings (no atoms yet), unique and sorted, and the
  # messages for the records that cannot make one.
  defp node_names(peers, sname) do
    {names, invalid} =
      Enum.reduce(peers, {[], []}, fn peer, {names, invalid} ->
        result =
          case peer do
            {:invalid, message} when is_binary(message) ->
              {:error, {:invalid_record, message}}

            {port, host} when is_binary(host) or is_list(host) ->
              node_name_string(sname, port, to_string(host))

            other ->
              {:error, {:invalid_record, "expected {port, host}, got: #{inspect(other)}"}}
          end

        case result do
          {:ok, name} -> {[name | names], invalid}
          {:error, {_kind, message}} -> {names, [message | invalid]}
        end
      end)

    {names |> Enum.uniq() |> Enum.sort(), Enum.reverse(invalid)}
  end

  defp list_nodes(%Config{list_nodes: {m, f, a}}), do: apply(m, f, a)

  # -- Connects (each in its own process, at most connect_concurrency) ------

  # Queues the nodes that are neither connecting nor queued, then starts
  # as many connects as there are free slots.
  defp enqueue(state, nodes) do
    busy = MapSet.new(Map.values(state.connecting) ++ state.queue)
    start_connects(%{state | queue: state.queue ++ Enum.reject(nodes, &MapSet.member?(busy, &1))})
  end

  defp start_connects(%{queue: [node | queue], config: config} = state)
       when map_size(state.connecting) < config.connect_concurrency do
    {_pid, ref} = spawn_monitor(fn -> exit({:caravan_connect, connect(config, node)}) end)
    start_connects(%{state | queue: queue, connecting: Map.put(state.connecting, ref, node)})
  end

  defp start_connects(state), do: state

  # Runs in the connect process: the connect MFA, bounded by
  # connect_timeout (the MFA runs in a task that is killed at the bound).
  defp connect(%Config{connect: {m, f, a}} = config, node) do
    started = System.monotonic_time()

    task =
      Task.async(fn ->
        try do
          apply(m, f, a ++ [node])
        catch
          kind, reason -> {:raised, Exception.format_banner(kind, reason)}
        end
      end)

    result =
      case Task.yield(task, config.connect_timeout) || Task.shutdown(task, :brutal_kill) do
        {:ok, result} -> result
        {:exit, reason} -> {:exit, reason}
        nil -> :timeout
      end

    {outcome, reason} = if result == true, do: {:ok, nil}, else: {:error, result}

    Caravan.Telemetry.execute(
      [:caravan, :connect],
      %{duration: System.monotonic_time() - started},
      %{topology: config.topology, node: node, result: outcome, reason: reason}
    )

    result
  end

  defp connect_done(%{config: config} = state, node, true) do
    Logger.info("[caravan] topology #{config.topology}: connected to #{node}")
    %{state | warned: MapSet.delete(state.warned, {:connect, node})}
  end

  defp connect_done(%{config: config} = state, node, :ignored) do
    log(:debug, config, "connect to #{node} ignored (this node is not distributed)")
    state
  end

  defp connect_done(state, node, failure),
    do: warn_once(state, {:connect, node}, "cannot connect to #{node}: #{inspect(failure)}")

  defp disconnect_all(nodes, %Config{disconnect: {m, f, a}} = config) do
    Enum.map(nodes, fn node ->
      result =
        try do
          apply(m, f, a ++ [node])
        catch
          kind, reason -> {:raised, Exception.format_banner(kind, reason)}
        end

      Caravan.Telemetry.execute(
        [:caravan, :disconnect],
        %{system_time: System.system_time()},
        %{topology: config.topology, node: node, reason: :pruned}
      )

      {node, result}
    end)
  end

  # -- Reporting (in the strategy process, which keeps what it warned of) ----

  defp report(result, %{config: config} = state) do
    state =
      Enum.reduce(result.answered, state, fn query, state ->
        recovered(state, {:lookup, query}, "lookup of #{inspect(query)} works again")
      end)

    state =
      Enum.reduce(result.errors, state, fn {query, reason}, state ->
        warn_once(
          state,
          {:lookup, query},
          "lookup of #{inspect(query)} failed (#{format_reason(reason)}); " <>
            "keeping the cluster as it is, retrying every #{config.poll_interval} ms"
        )
      end)

    known =
      if result.authoritative?,
        do: MapSet.new(result.found),
        else: MapSet.union(state.known, MapSet.new(result.found))

    if result.answered != [] do
      log(:debug, config, "DNS lists #{length(result.found)} node(s): #{inspect(result.found)}")
    end

    # Forget connect warnings about nodes DNS no longer lists, so the set
    # of warnings stays as small as the answer.
    warned =
      MapSet.reject(state.warned, fn
        {:connect, node} -> node not in result.found
        _other -> false
      end)

    state =
      %{state | warned: warned, known: known}
      |> warn_if(
        result.invalid != [],
        :invalid_records,
        fn -> "skipped SRV records: #{Enum.join(result.invalid, "; ")}" end
      )
      |> warn_if(
        result.dropped > 0,
        :max_nodes,
        fn ->
          "DNS lists #{length(result.found) + result.dropped} nodes, more than max_nodes " <>
            "(#{config.max_nodes}); ignored #{result.dropped} of them and pruned none"
        end
      )

    for {node, outcome} <- result.disconnects do
      Logger.info(
        "[caravan] topology #{config.topology}: disconnected #{node}, which DNS no longer " <>
          "lists (prune: true; disconnect returned #{inspect(outcome)})"
      )
    end

    enqueue(state, result.new)
  end

  # warn_once/3 while `condition` holds; forgets the warning once it stops.
  defp warn_if(state, true, key, message), do: warn_once(state, key, message.())

  defp warn_if(state, false, key, _message),
    do: %{state | warned: MapSet.delete(state.warned, key)}

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
