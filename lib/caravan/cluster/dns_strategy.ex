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
      Default: the VM's (an erl_inetrc's nameserver lines, as Caravan 1.x;
      `Caravan.DNS.vm_nameservers/0`), else the system's resolv.conf.
    * `:timeout` - bound on one lookup, ms. Default #{Caravan.DNS.Options.default_timeout()} (at most
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
      `Caravan.DnsClient.Native`; `Caravan.DnsClient.InetRes` is Caravan
      1.x's client on OTP's `:inet_res`.
    * `:report_interval` - ms between repeated warnings about a node DNS
      lists that stays unreachable. Default 300000.
    * `:topology`, `:connect`, `:disconnect`, `:list_nodes` - given by
      libcluster; when started without it: `:caravan`,
      `{:net_kernel, :connect_node, []}`, `{:erlang, :disconnect_node, []}`,
      `{:erlang, :nodes, [:connected]}`.

  ## Behaviour

  The first lookup runs soon after start without blocking the supervisor
  (after a random 0 to min(`:poll_interval` / 100, 10) ms, so nodes booted
  together do not all ask DNS in the same millisecond), then one every
  `:poll_interval` ms. Each poll runs in its own process:
  the queries are asked in parallel, and new nodes (not this node, not in
  `list_nodes`) are connected in parallel, each bounded by
  `:connect_timeout`; a slow poll never delays the timer (the next poll is
  skipped while one still runs).

  A lookup that fails (timeout, SERVFAIL, REFUSED, a malformed answer)
  changes nothing: the cluster stays as it is, a warning is logged once per
  failure streak, and the next poll tries again. NXDOMAIN and NODATA mean
  "no instances". Records that cannot make a valid node name (bad target,
  port 0) are skipped with one warning.

  An invalid config fails the start (as dns_cluster does), so a typo stops
  the boot instead of leaving the node unclustered: an unknown key (named
  with the nearest known key, `String.jaro_distance/2`) or a bad value is
  logged at error and `start_link/1` returns
  `{:error, {:invalid_config, message}}`.

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
  otherwise; a healthy, unchanged cluster logs nothing above debug. A node
  that is not distributed says so at warning once, when the topology
  starts. See `Caravan.Telemetry` for the events.

  Silence is not health, and a failed connect says why:

    * At start, a warning when this node's own name is not
      `<node_sname>-<port>@<host>`, the name its peers will dial.
    * A streak of #{Caravan.Cluster.Silence.polls()} authoritative polls that
      find no instances (NXDOMAIN, NODATA, no records), or only this node,
      is a warning once, naming the queries and nameservers; an info line
      when DNS lists nodes again.
    * A connect that fails is explained at warning (`Caravan.diagnose/1`'s
      probe, in its own process: the host did not resolve, naming the
      nameservers asked; nothing listens on IP:PORT, refused or timed out;
      the peer answered but the handshake failed, a cookie or name
      mismatch; not a Caravan name), then again every `:report_interval` ms
      while DNS lists the node and it stays unreachable; the failures in
      between are debug.

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

  import Caravan.Cluster.Log, only: [log: 3]

  alias Caravan.Cluster.{
    Config,
    Connector,
    Leave,
    Membership,
    Messages,
    Poll,
    Silence,
    Unreachable,
    Warnings
  }

  alias Caravan.Diagnose.Probe

  @doc false
  # The name leave requests are sent to (Caravan.Cluster.Leave).
  defdelegate registered_name(topology), to: Leave

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

  Returns `{:ok, pid}`, or `{:error, {:invalid_config, message}}` after
  logging the message when the config is invalid (an unknown key, with the
  nearest known one, or a bad value): the start fails, so a typo stops
  the application's boot instead of leaving the node unclustered.
  """
  @spec start_link([map()] | keyword()) :: GenServer.on_start()
  def start_link([%{config: _} = state]), do: GenServer.start_link(__MODULE__, state)
  def start_link(opts) when is_list(opts), do: GenServer.start_link(__MODULE__, opts)

  # -- GenServer: poll, diff, act -------------------------------------------

  @impl GenServer
  def init(arg) do
    case Config.new(arg) do
      {:ok, config} ->
        Process.send_after(self(), :poll, Poll.first_delay(config.poll_interval))
        # nodeup events, to keep out nodes DNS no longer lists (see
        # Caravan.Cluster.Membership); leave requests arrive under this name.
        _ = :net_kernel.monitor_nodes(true)
        _ = Leave.register(config)
        Leave.warn_otp_settings(config)
        Messages.warn_at_start(config)

        {:ok,
         %{
           config: config,
           # nil, or {tag, monitor} of the poll process running.
           poll: nil,
           # A nodeup of a departed node asks for a fresh look at DNS
           # while a poll runs: it runs once that one is done.
           repoll: false,
           membership:
             Membership.new(node(),
               prune: config.prune,
               leave_after: config.leave_after,
               max_departed: config.max_nodes
             ),
           warnings: Warnings.new(),
           connector: Connector.new(config),
           # Streaks of polls that found nobody, or only this node.
           silence: Silence.new(),
           # When each unreachable node was last reported.
           unreachable: Unreachable.new(config.report_interval),
           # The last poll's outcome, for Caravan.diagnose/1 (:sys.get_state).
           last_poll: nil
         }}

      {:error, {_kind, message}} ->
        Logger.error("[caravan] #{inspect(__MODULE__)} not started: #{message}")
        {:stop, {:invalid_config, message}}
    end
  end

  @impl GenServer
  def handle_info(:poll, %{config: config} = state) do
    Process.send_after(self(), :poll, config.poll_interval)

    if state.poll do
      log(:debug, config, "previous poll still running; skipping this one")
      {:noreply, state}
    else
      {:noreply, %{state | poll: start_poll(config)}}
    end
  end

  # A fresh look at DNS, out of the timer's rhythm (see the nodeup clause).
  def handle_info(:repoll, state) do
    if state.poll,
      do: {:noreply, %{state | repoll: true}},
      else: {:noreply, %{state | poll: start_poll(state.config)}}
  end

  def handle_info({:caravan_poll, tag, result}, %{poll: {tag, monitor}} = state) do
    Process.demonitor(monitor, [:flush])
    {:noreply, state |> Map.put(:poll, nil) |> then(&act(result, &1)) |> repoll()}
  end

  def handle_info({:DOWN, monitor, :process, _pid, reason}, %{poll: {_tag, monitor}} = state) do
    state = warn(%{state | poll: nil}, :poll_crash, "poll crashed: #{inspect(reason)}")
    {:noreply, repoll(state)}
  end

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

  def handle_info({:nodedown, _node}, state), do: {:noreply, state}

  # A member asks this node to leave: its DNS answer no longer lists us.
  # Every request is carried out (global may have connected this node to
  # others since the last one); the warning is said once.
  def handle_info({:caravan_leave, _topology, from}, state) when is_atom(from) do
    {membership, first?} = Membership.asked_to_leave(state.membership, from)
    state = %{state | membership: membership}

    if first?,
      do:
        Logger.warning(
          "[caravan] topology #{state.config.topology}: #{from} asked this node to leave: " <>
            "DNS no longer lists #{node()} there (prune: true). Leaving the cluster; no more " <>
            "connects until DNS lists this node again"
        ),
      else: log(:debug, state.config, "#{from} asked this node to leave again")

    Leave.leave()
    {:noreply, cancel_connects(state, Connector.pending(state.connector))}
  end

  def handle_info({:caravan_why, node, why}, %{config: config} = state) do
    log(
      :warning,
      config,
      "cannot connect to #{node}: #{why} " <>
        "(reported again every #{div(config.report_interval, 1000)} s while DNS lists it " <>
        "and it stays unreachable)"
    )

    {:noreply, state}
  end

  def handle_info(message, state) do
    case Connector.handle(state.connector, message) do
      {:done, node, result, connector} ->
        {:noreply, connected(%{state | connector: connector}, node, result)}

      :unknown ->
        {:noreply, state}
    end
  end

  # Poll: one process per poll, which sends its result (Caravan.Cluster.Poll).
  defp start_poll(config) do
    owner = self()
    tag = make_ref()

    {_pid, monitor} = spawn_monitor(fn -> send(owner, {:caravan_poll, tag, Poll.run(config)}) end)

    {tag, monitor}
  end

  # The poll asked for while the last one ran, if any.
  defp repoll(%{repoll: true, poll: nil} = state),
    do: %{state | repoll: false, poll: start_poll(state.config)}

  defp repoll(state), do: state

  # Act on a poll's result: log what changed (Warnings decides what is
  # news), keep departed nodes out (Membership), connect the new ones.
  defp act(result, %{config: config} = state) do
    {warnings, entries} = Warnings.poll(state.warnings, result, config)
    Enum.each(entries, fn {level, message} -> log(level, config, message) end)

    # Forget unreachable nodes DNS no longer lists, so the ledger stays as
    # small as the answer.
    last_poll =
      result
      |> Map.take([:found, :answered, :errors, :invalid])
      |> Map.put(:at, System.monotonic_time())

    state =
      %{
        state
        | warnings: warnings,
          last_poll: last_poll,
          unreachable: Unreachable.keep(state.unreachable, MapSet.new(result.found))
      }
      |> silence(result)

    state = membership(state, result)

    if Membership.dial?(state.membership),
      do: %{state | connector: Connector.enqueue(state.connector, result.new)},
      else: state
  end

  # Under libcluster, libcluster has logged the connect at info already.
  defp connected(%{config: config} = state, node, true) do
    log(if(config.libcluster, do: :debug, else: :info), config, "connected to #{node}")
    %{state | unreachable: Unreachable.clear(state.unreachable, node)}
  end

  defp connected(%{config: config} = state, node, :ignored) do
    log(:debug, config, "connect to #{node} ignored (this node is not distributed)")
    state
  end

  # A failed connect: the first of a streak, and then one every
  # report_interval, is explained (Caravan.Diagnose.Probe, in its own
  # process, which sends {:caravan_why, node, text}); the others are debug.
  defp connected(%{config: config} = state, node, failure) do
    now = System.monotonic_time(:millisecond)

    case Unreachable.failed(state.unreachable, node, now) do
      {true, unreachable} ->
        owner = self()
        result = Messages.failure(failure)
        spawn(fn -> send(owner, {:caravan_why, node, result <> Probe.why(node)}) end)
        %{state | unreachable: unreachable}

      {false, _} ->
        log(:debug, config, "cannot connect to #{node}: #{inspect(failure)}")
        state
    end
  end

  # Silence is not health: a streak of polls that found no instances, or
  # only this node, is a warning once (Caravan.Cluster.Silence).
  defp silence(%{config: config} = state, result) do
    found = if result.authoritative?, do: result.found, else: :unknown
    {event, silence} = Silence.track(state.silence, found, node())
    state = %{state | silence: silence}

    case event do
      {:start, kind} ->
        log(:warning, config, "#{Messages.silence(kind, config)}")
        state

      {:end, _kind} ->
        log(:info, config, "DNS lists #{length(result.found)} node(s) again")

        state

      nil ->
        state
    end
  end

  # -- Membership: prune, leave (decisions in Caravan.Cluster.Membership) ---

  # Applies one poll's answer to the membership and carries out what it
  # decides. Returns the state.
  defp membership(%{config: config} = state, result) do
    # This node's name, as of now (distribution may start after init).
    membership = %{state.membership | self: node()}

    {membership, events} =
      if result.authoritative?,
        do: Membership.authoritative(membership, result.found),
        else: Membership.partial(membership, result.found)

    state = Enum.reduce(events, %{state | membership: membership}, &membership_event/2)

    if result.authoritative? do
      connected = list_nodes(config)
      {membership, ask, force} = Membership.enforce(state.membership, connected)
      Enum.each(ask, &Leave.ask(config, &1))
      Enum.each(force, &Leave.disconnect(config, &1))
      state = %{state | membership: membership}

      cancel_connects(
        state,
        Membership.cancel(state.membership, Connector.pending(state.connector))
      )
    else
      state
    end
  end

  defp membership_event({:departed, nodes}, %{config: config} = state) do
    if config.prune,
      do:
        log(
          :info,
          config,
          "DNS no longer lists #{Enum.join(nodes, ", ")}; " <>
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

    log(
      :warning,
      config,
      "DNS has not listed this node (#{node()}) in " <>
        "#{config.leave_after} authoritative answers in a row; #{action} until DNS lists it " <>
        "again (a failed health check or readiness probe?)"
    )

    if config.prune, do: Leave.leave()
    cancel_connects(state, Connector.pending(state.connector))
  end

  defp membership_event(:back, %{config: config} = state) do
    log(:info, config, "DNS lists this node again; connecting again")

    state
  end

  # Stops the connects to `nodes` (Connector.cancel/2) and aborts a
  # connection setup still pending in net_kernel (erlang:disconnect_node/1
  # on a pending connection cancels it; OTP would otherwise run it to
  # net_setuptime, 7 s). A connection that came up meanwhile is left alone:
  # a departed node that is connected is asked to leave instead.
  defp cancel_connects(state, []), do: state

  defp cancel_connects(%{config: config} = state, nodes) do
    {connector, cancelled} = Connector.cancel(state.connector, nodes)
    up = MapSet.new(Node.list([:visible, :hidden]))

    for node <- cancelled, not MapSet.member?(up, node), do: :erlang.disconnect_node(node)

    if cancelled != [],
      do:
        log(
          :debug,
          config,
          "cancelled connects to #{inspect(cancelled)}: DNS no longer lists them"
        )

    %{state | connector: connector}
  end

  defp list_nodes(%Config{list_nodes: {m, f, a}}), do: apply(m, f, a)

  # -- Logs (warn once per streak, Caravan.Cluster.Warnings) ------------------

  defp warn(state, key, message) do
    {level, warnings} = Warnings.warn(state.warnings, key)
    log(level, state.config, message)
    %{state | warnings: warnings}
  end
end
