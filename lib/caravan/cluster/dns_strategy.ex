defmodule Caravan.Cluster.DnsStrategy do
  @moduledoc """
  A libcluster strategy that finds peers in DNS SRV records (Consul's DNS
  interface, a Kubernetes headless service, any SRV source) and connects to
  them. Each SRV record gives a node name `:"<node_sname>-<port>@<target>"`,
  whose distribution port is the SRV port (see `Caravan.Epmd.node_name/3`).

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

  ## From A/AAAA records (libcluster DNSPoll, dns_cluster)

  With `record_type: :a`, `:aaaa` or `:ip` (both), every address the query
  lists is a peer named `"<node_basename>@<ip>"`, as libcluster's `DNSPoll`
  and `dns_cluster` name them, so their users keep their node names. The
  distribution port follows the port rule: `"app"` listens on 4370,
  `"app-4371"` on 4371 (`Caravan.Epmd`). IPv6 addresses are written as
  `:inet.ntoa/1` writes them (`app@fd00::1`).

      config: [query: "app.internal", record_type: :ip, node_basename: "app"]

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
    * `:node_sname` (required with SRV records) - the name part before
      the port, e.g. `"app"` for nodes named `app-4370@host`.
    * `:record_type` - `:srv` (default): SRV records; `:a`, `:aaaa` or
      `:ip` (A and AAAA): address records, nodes named
      `<node_basename>@<ip>` (see above). `:dns_client` applies to SRV
      only.
    * `:node_basename` - with address records, the name part of every
      node, e.g. `"app"` (port 4370) or `"app-4371"`. Default: this node's
      name part (as `dns_cluster` does).
    * `:node_host` - the host part of each node name: `:auto` (default) the
      SRV target, except Consul `<hex>.addr.<dc>.consul` targets (Nomad
      jobs), which become their IP address; `:target` the SRV target as
      given (Caravan 1.x); `:ip` the target's IP address (decoded from
      `.addr.`, else the answer's additional section, else resolved).
      See `Caravan.DNS`.
    * `:poll_interval` - ms between lookups. Default 5000. libcluster
      DNSPoll's `:polling_interval` is accepted as an alias.
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
  otherwise; a healthy, unchanged cluster logs nothing above debug. A node
  that is not distributed says so at warning once, when the topology
  starts. See `Caravan.Telemetry` for the events.

  ## Under libcluster

  When libcluster is loaded (`Cluster.Strategy` exists when the topology
  starts), every connect and prune goes through libcluster's own
  `Cluster.Strategy.connect_nodes/4` and `disconnect_nodes/4`, one node
  per call from Caravan's connect processes (still parallel and bounded by
  `:connect_timeout`), so libcluster logs `[libcluster:<topology>]
  connected to ...` and sends its `[:libcluster, :connect_node |
  :disconnect_node, :ok | :error]` telemetry as for its own strategies;
  Caravan's own `connected to` line is then debug, and its debug lines
  appear only with `config :libcluster, debug: true`, as libcluster's do.
  A connect that `:connect_timeout` cuts short is killed before libcluster
  reports it (Caravan's `[:caravan, :connect]` event reports `:timeout`).
  Without libcluster, Caravan calls the MFAs itself.
  """
  use GenServer
  require Logger

  alias Caravan.Cluster.{Config, Connector, Libcluster, Poll, Warnings}

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

  # -- GenServer: poll, diff, act -------------------------------------------

  @impl GenServer
  def init(arg) do
    case Config.new(arg) do
      {:ok, config} ->
        warn_if_not_distributed(config)
        send(self(), :poll)

        {:ok,
         %{
           config: config,
           # nil, or {tag, monitor} of the poll process running.
           poll: nil,
           # The nodes DNS listed (the only ones prune may disconnect).
           known: MapSet.new(),
           warnings: Warnings.new(),
           connector: Connector.new(config)
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
      {:noreply, %{state | poll: start_poll(config, state.known)}}
    end
  end

  def handle_info({:caravan_poll, tag, result}, %{poll: {tag, monitor}} = state) do
    Process.demonitor(monitor, [:flush])
    {:noreply, act(result, %{state | poll: nil})}
  end

  def handle_info({:DOWN, monitor, :process, _pid, reason}, %{poll: {_tag, monitor}} = state),
    do: {:noreply, warn(%{state | poll: nil}, :poll_crash, "poll crashed: #{inspect(reason)}")}

  def handle_info(message, state) do
    case Connector.handle(state.connector, message) do
      {:done, node, result, connector} ->
        {:noreply, connected(%{state | connector: connector}, node, result)}

      :unknown ->
        {:noreply, state}
    end
  end

  # Poll: one process per poll, which sends its result (Caravan.Cluster.Poll).
  defp start_poll(config, known) do
    owner = self()
    tag = make_ref()

    {_pid, monitor} =
      spawn_monitor(fn -> send(owner, {:caravan_poll, tag, Poll.run(config, known)}) end)

    {tag, monitor}
  end

  # Act on a poll's result: log what changed, prune the departed nodes,
  # connect the new ones.
  defp act(result, %{config: config} = state) do
    state =
      Enum.reduce(result.answered, state, fn query, state ->
        recover(state, {:lookup, query}, "lookup of #{inspect(query)} works again")
      end)

    state =
      Enum.reduce(result.errors, state, fn {query, reason}, state ->
        warn(
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
    found = MapSet.new(result.found)

    warnings =
      Warnings.clear_if(state.warnings, fn
        {:connect, node} -> not MapSet.member?(found, node)
        _other -> false
      end)

    state =
      %{state | warnings: warnings, known: known}
      |> warn_if(result.invalid != [], :invalid_records, fn ->
        "skipped SRV records: #{Enum.join(result.invalid, "; ")}"
      end)
      |> warn_if(result.dropped > 0, :max_nodes, fn ->
        "DNS lists #{length(result.found) + result.dropped} nodes, more than max_nodes " <>
          "(#{config.max_nodes}); ignored #{result.dropped} of them and pruned none"
      end)

    Enum.each(result.departed, &prune(config, &1))
    %{state | connector: Connector.enqueue(state.connector, result.new)}
  end

  defp prune(%Config{disconnect: {m, f, a}} = config, node) do
    outcome =
      try do
        if config.libcluster,
          do: Libcluster.disconnect(config.topology, config.disconnect, config.list_nodes, node),
          else: apply(m, f, a ++ [node])
      catch
        kind, reason -> {:raised, Exception.format_banner(kind, reason)}
      end

    Caravan.Telemetry.execute(
      [:caravan, :disconnect],
      %{system_time: System.system_time()},
      %{topology: config.topology, node: node, reason: :pruned}
    )

    Logger.info(
      "[caravan] topology #{config.topology}: disconnected #{node}, which DNS no longer " <>
        "lists (prune: true; disconnect returned #{inspect(outcome)})"
    )
  end

  # Under libcluster, libcluster has logged the connect at info already.
  defp connected(%{config: config} = state, node, true) do
    log(if(config.libcluster, do: :debug, else: :info), config, "connected to #{node}")
    %{state | warnings: Warnings.clear(state.warnings, {:connect, node})}
  end

  defp connected(%{config: config} = state, node, :ignored) do
    log(:debug, config, "connect to #{node} ignored (this node is not distributed)")
    state
  end

  defp connected(state, node, failure),
    do: warn(state, {:connect, node}, "cannot connect to #{node}: #{inspect(failure)}")

  # -- Logs (warn once per streak, Caravan.Cluster.Warnings) ------------------

  # warn/3 while `condition` holds; forgets the warning once it stops.
  defp warn_if(state, true, key, message), do: warn(state, key, message.())

  defp warn_if(state, false, key, _message),
    do: %{state | warnings: Warnings.clear(state.warnings, key)}

  defp warn(state, key, message) do
    {level, warnings} = Warnings.warn(state.warnings, key)
    log(level, state.config, message)
    %{state | warnings: warnings}
  end

  defp recover(state, key, message) do
    {level, warnings} = Warnings.recover(state.warnings, key)
    log(level, state.config, message)
    %{state | warnings: warnings}
  end

  # Once, when a topology starts (dns_cluster and libcluster warn too): a
  # node without -name/-sname cannot connect to anything it finds.
  defp warn_if_not_distributed(config) do
    unless Node.alive?() do
      Logger.warning(
        "[caravan] topology #{config.topology}: this node is not distributed (started " <>
          "without -name or -sname), so it will look up peers but cannot connect to them; " <>
          "start it with -name <name>@<host> (or -sname) and Caravan's epmd module"
      )
    end
  end

  defp log(nil, _config, _message), do: :ok

  # Under libcluster, debug lines follow `config :libcluster, debug: true`,
  # as libcluster's own strategies do.
  defp log(:debug, %Config{libcluster: true} = config, message) do
    if Libcluster.debug?(),
      do: Logger.debug("[caravan] topology #{config.topology}: #{message}")

    :ok
  end

  defp log(level, config, message),
    do: Logger.log(level, "[caravan] topology #{config.topology}: #{message}")

  defp format_reason({kind, message}) when is_atom(kind) and is_binary(message),
    do: "#{kind}: #{message}"

  defp format_reason(reason), do: inspect(reason)
end
