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
    * `:prune` - keep nodes that DNS no longer lists out of the cluster.
      Default `false` (as Caravan 1.x). See "Pruning" below.
    * `:leave_after` - authoritative answers in a row without this node
      (once listed) after which it stops connecting (and leaves, with
      `prune: true`); also how many times a departed node is asked to leave
      before it is disconnected. Default 3.
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

  With `prune: true`, DNS is the source of membership while it answers
  authoritatively (every query answered, NXDOMAIN and NODATA count, no
  more than `:max_nodes` nodes). A node this strategy found in DNS before
  and that an authoritative answer no longer lists is *departed*:

    * if it is connected, it is asked to leave: its strategy (the same
      topology name) runs `:global.disconnect/0` (OTP 25.1+), which drops
      it from every node without the collateral disconnects that an
      `erlang:disconnect_node/1` from a member causes under OTP's
      `prevent_overlapping_partitions` (see `:global`); it then connects to
      nobody until its own DNS answer lists it again;
    * whenever it connects again (whoever dialed), DNS is asked again at
      once, and it is asked to leave again if still not listed;
    * connects in flight to it are cancelled;
    * a node that does not leave after `:leave_after` requests (no Caravan
      with this mechanism there, or OTP < 25.1) is disconnected through the
      `:disconnect` MFA, with a warning.

  A node that DNS listed before and that is missing from `:leave_after`
  authoritative answers in a row (a failed health check) stops connecting
  and says so once; with `prune: true` it also leaves the cluster. A node
  DNS has never listed (booting before its health check passes) keeps
  connecting. Both sides come back at the first poll that lists the node
  again. A failed lookup changes nothing, and nodes DNS never listed (a
  remote shell, another topology's nodes) are left alone.

  Works with OTP's defaults (`connect_all` and
  `prevent_overlapping_partitions` true) and with either turned off. On OTP
  without `global:disconnect/0` (25.0) a warning at start says that prune
  may disconnect healthy peers.

  ## Logs and telemetry

  Logs are prefixed `[caravan]`: info when a node is connected or pruned
  or a failed lookup works again, a warning once per failure streak, debug
  otherwise; a healthy, unchanged cluster logs nothing above debug. See
  `Caravan.Telemetry` for the events.
  """
  use GenServer
  require Logger

  alias Caravan.Cluster.{Config, Membership}

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
        # nodeup events, to keep out nodes DNS no longer lists (see
        # Caravan.Cluster.Membership); leave requests arrive under this name.
        :ok = :net_kernel.monitor_nodes(true)
        _ = register_topology(config)
        warn_otp_settings(config)

        {:ok,
         %{
           config: config,
           poll: nil,
           # A nodeup of a departed node asks for a fresh look at DNS
           # while a poll runs: it runs once that one is done.
           repoll: false,
           warned: MapSet.new(),
           membership:
             Membership.new(node(),
               prune: config.prune,
               leave_after: config.leave_after,
               max_departed: config.max_nodes
             ),
           # monitor ref => {node, pid}, for connects in flight; queue:
           # nodes waiting for a free slot (connect_concurrency).
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
      {:noreply, start_poll(state)}
    end
  end

  # A fresh look at DNS, out of the timer's rhythm (see the nodeup clause).
  def handle_info(:repoll, state) do
    if state.poll, do: {:noreply, %{state | repoll: true}}, else: {:noreply, start_poll(state)}
  end

  def handle_info({:DOWN, ref, :process, _pid, reason}, %{poll: ref} = state) do
    state = %{state | poll: nil}

    state =
      case reason do
        {:caravan_poll, result} -> report(result, state)
        other -> warn_once(state, :poll_crash, "poll crashed: #{inspect(other)}")
      end

    if state.repoll,
      do: {:noreply, start_poll(%{state | repoll: false})},
      else: {:noreply, state}
  end

  def handle_info({:DOWN, ref, :process, _pid, reason}, %{connecting: connecting} = state)
      when is_map_key(connecting, ref) do
    {{node, _pid}, connecting} = Map.pop(connecting, ref)

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

  # A node DNS no longer lists (as of the last authoritative answer) is
  # connected again, whoever dialed: look at DNS again now, and ask it to
  # leave if the fresh answer still does not list it.
  def handle_info({:nodeup, node}, state) do
    if Membership.refuse?(state.membership, node) do
      log(:debug, state.config, "#{node}, which DNS no longer lists, connected; checking DNS")
      send(self(), :repoll)
    end

    {:noreply, state}
  end

  # A member asks this node to leave: its DNS answer no longer lists us.
  def handle_info({:caravan_leave, _topology, from}, state) when is_atom(from) do
    {membership, first?} = Membership.asked_to_leave(state.membership, from)
    state = %{state | membership: membership}

    if first? do
      Logger.warning(
        "[caravan] topology #{state.config.topology}: #{from} asked this node to leave: " <>
          "DNS no longer lists #{node()} there (prune: true). Leaving the cluster; no more " <>
          "connects until DNS lists this node again"
      )

      leave_cluster()
      {:noreply, cancel_connects(state, all_connects(state))}
    else
      {:noreply, state}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}

  # -- One poll (runs in its own process) ------------------------------------

  defp poll(config) do
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

    %{
      found: nodes,
      answered: for({query, {:ok, _}} <- answers, do: query),
      errors: errors,
      invalid: invalid,
      dropped: dropped,
      authoritative?: authoritative?,
      new: Enum.reject(nodes, &(&1 == node() or MapSet.member?(connected, &1)))
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
    busy = MapSet.new(all_connects(state))
    start_connects(%{state | queue: state.queue ++ Enum.reject(nodes, &MapSet.member?(busy, &1))})
  end

  defp start_connects(%{queue: [node | queue], config: config} = state)
       when map_size(state.connecting) < config.connect_concurrency do
    {pid, ref} = spawn_monitor(fn -> exit({:caravan_connect, connect(config, node)}) end)

    start_connects(%{
      state
      | queue: queue,
        connecting: Map.put(state.connecting, ref, {node, pid})
    })
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

  # The nodes being connected or waiting for a slot.
  defp all_connects(state),
    do: Enum.map(Map.values(state.connecting), &elem(&1, 0)) ++ state.queue

  # Drops `nodes` from the queue and stops their connects in flight: the
  # connect process is killed, and a connection setup still pending in
  # net_kernel is aborted (erlang:disconnect_node/1 on a pending connection
  # cancels it; OTP would otherwise run it to net_setuptime, 7 s). A
  # connection that came up meanwhile is left alone (a departed node that
  # is connected is asked to leave instead).
  defp cancel_connects(state, []), do: state

  defp cancel_connects(%{config: config} = state, nodes) do
    cancel = MapSet.new(nodes)

    {cancelled, connecting} =
      Enum.split_with(state.connecting, fn {_ref, {node, _pid}} -> node in cancel end)

    up = MapSet.new(Node.list([:visible, :hidden]))

    for {ref, {node, pid}} <- cancelled do
      Process.demonitor(ref, [:flush])
      Process.exit(pid, :kill)
      unless MapSet.member?(up, node), do: :erlang.disconnect_node(node)
    end

    if cancelled != [] do
      names = Enum.map(cancelled, fn {_ref, {node, _pid}} -> node end)
      log(:debug, config, "cancelled connects to #{inspect(names)}: DNS no longer lists them")
    end

    start_connects(%{
      state
      | connecting: Map.new(connecting),
        queue: Enum.reject(state.queue, &(&1 in cancel))
    })
  end

  # -- Membership: prune, leave (decisions in Caravan.Cluster.Membership) ---

  # Applies one poll's answer to the membership and carries out what it
  # decides. Returns the state.
  defp membership(%{config: config} = state, result) do
    {membership, events} =
      if result.authoritative?,
        do: Membership.authoritative(state.membership, result.found),
        else: Membership.partial(state.membership, result.found)

    state = Enum.reduce(events, %{state | membership: membership}, &membership_event/2)

    if result.authoritative? do
      connected = list_nodes(config)
      {membership, ask, force} = Membership.enforce(state.membership, connected)
      Enum.each(ask, &ask_to_leave(config, &1))
      state = disconnect_forced(%{state | membership: membership}, force)
      cancel_connects(state, Membership.cancel(state.membership, all_connects(state)))
    else
      state
    end
  end

  defp membership_event({:departed, nodes}, %{config: config} = state) do
    if config.prune,
      do:
        Logger.info(
          "[caravan] topology #{config.topology}: DNS no longer lists #{Enum.join(nodes, ", ")}; " <>
            "keeping it out (prune: true) until DNS lists it again"
        )

    state
  end

  defp membership_event({:returned, nodes}, %{config: config} = state) do
    log(:debug, config, "DNS lists #{Enum.join(nodes, ", ")} again")
    state
  end

  defp membership_event({:self_missing, n}, %{config: config} = state) do
    log(
      :debug,
      config,
      "DNS does not list this node (#{n} of #{config.leave_after} authoritative answers)"
    )

    state
  end

  defp membership_event({:leave, :missing}, %{config: config} = state) do
    action =
      if config.prune,
        do: "left the cluster (prune: true) and stopped connecting",
        else: "stopped connecting (prune: false: existing connections stay)"

    Logger.warning(
      "[caravan] topology #{config.topology}: DNS has not listed this node (#{node()}) in " <>
        "#{config.leave_after} authoritative answers in a row; #{action} until DNS lists it " <>
        "again (a failed health check or readiness probe?)"
    )

    if config.prune, do: leave_cluster()
    cancel_connects(state, all_connects(state))
  end

  defp membership_event(:back, %{config: config} = state) do
    Logger.info(
      "[caravan] topology #{config.topology}: DNS lists this node again; connecting again"
    )

    state
  end

  # Asks `node`'s strategy (same topology) to leave: it then runs
  # global:disconnect/0, which drops it from every node without the
  # overlapping-partition collateral an erlang:disconnect_node/1 from here
  # would cause. Never sets up a connection (noconnect).
  defp ask_to_leave(%Config{topology: topology} = config, node) do
    _ =
      :erlang.send({registered_name(topology), node}, {:caravan_leave, topology, node()}, [
        :noconnect
      ])

    Logger.info(
      "[caravan] topology #{topology}: asked #{node} to leave: DNS no longer lists it (prune: true)"
    )

    Caravan.Telemetry.execute(
      [:caravan, :disconnect],
      %{system_time: System.system_time()},
      %{topology: config.topology, node: node, reason: :asked_to_leave}
    )
  end

  # Nodes that did not leave when asked (no Caravan 1.2+ or OTP < 25.1
  # there): disconnected from here through the :disconnect MFA.
  defp disconnect_forced(state, []), do: state

  defp disconnect_forced(%{config: %Config{disconnect: {m, f, a}} = config} = state, nodes) do
    for node <- nodes do
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

      Logger.warning(
        "[caravan] topology #{config.topology}: #{node}, which DNS no longer lists, did not " <>
          "leave when asked #{config.leave_after} times (prune: true); disconnected it " <>
          "(#{inspect(result)})" <>
          if(overlapping_partitions?(),
            do:
              ". With connect_all and prevent_overlapping_partitions on, OTP's global may " <>
                "disconnect healthy peers as well",
            else: ""
          )
      )
    end

    state
  end

  # This node leaves every node global knows, so that no other node sees
  # a lost connection it must act on (global:disconnect/0, OTP 25.1+).
  defp leave_cluster do
    cond do
      not Node.alive?() ->
        :ok

      function_exported?(:global, :disconnect, 0) ->
        spawn(fn -> :global.disconnect() end)

      true ->
        for node <- Node.list(), do: :erlang.disconnect_node(node)
    end

    :ok
  end

  @doc """
  The name the strategy of `topology` registers on each node:
  `:"Elixir.Caravan.Cluster.DnsStrategy.<topology>"`. Members send leave
  requests to it (prune), so every node of a cluster must use the same
  topology name, as one libcluster config does.
  """
  @spec registered_name(atom()) :: atom()
  def registered_name(topology) when is_atom(topology), do: :"#{__MODULE__}.#{topology}"

  defp register_topology(config) do
    Process.register(self(), registered_name(config.topology))
    true
  rescue
    ArgumentError ->
      Logger.warning(
        "[caravan] topology #{config.topology}: #{inspect(registered_name(config.topology))} is " <>
          "already registered (two strategies with one topology name?); this one will not " <>
          "hear leave requests"
      )

      false
  end

  # Settings with which a prune cannot remove only the departed node.
  defp warn_otp_settings(%Config{prune: true} = config) do
    overlapping? = overlapping_partitions?()

    unless function_exported?(:global, :disconnect, 0) do
      Logger.warning(
        "[caravan] topology #{config.topology}: prune: true on OTP " <>
          "#{:erlang.system_info(:otp_release)} without global:disconnect/0 (OTP 25.1+): " <>
          "this node cannot leave by itself; members disconnect it after " <>
          "#{config.leave_after} polls" <>
          if(overlapping?,
            do:
              ", and with connect_all and prevent_overlapping_partitions on, OTP's global " <>
                "then disconnects healthy peers too. Upgrade OTP, or start nodes with " <>
                "-kernel prevent_overlapping_partitions false",
            else: ""
          )
      )
    end
  end

  defp warn_otp_settings(_config), do: :ok

  # OTP's global drops healthy peers on a disconnect (OTP 25's defaults).
  defp overlapping_partitions? do
    :application.get_env(:kernel, :prevent_overlapping_partitions, true) == true and
      connect_all?()
  end

  defp connect_all? do
    case :application.get_env(:kernel, :connect_all) do
      {:ok, value} -> value == true
      :undefined -> :init.get_argument(:connect_all) != {:ok, [[~c"false"]]}
    end
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
      %{state | warned: warned}
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

    state = membership(state, result)

    if Membership.dial?(state.membership),
      do: enqueue(state, result.new),
      else: state
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

  defp start_poll(%{config: config} = state) do
    {_pid, ref} = spawn_monitor(fn -> exit({:caravan_poll, poll(config)}) end)
    %{state | poll: ref}
  end

  defp log(:debug, config, message),
    do: Logger.debug("[caravan] topology #{config.topology}: #{message}")

  defp format_reason({kind, message}) when is_atom(kind) and is_binary(message),
    do: "#{kind}: #{message}"

  defp format_reason(reason), do: inspect(reason)
end
