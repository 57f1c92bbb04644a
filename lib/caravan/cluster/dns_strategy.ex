defmodule Caravan.Cluster.DnsStrategy do
  alias Caravan.Cluster.Config

  @moduledoc """
  A libcluster strategy that finds peers in DNS SRV records (Consul's DNS
  interface, a Kubernetes headless service, any SRV source) and connects to
  them. Each SRV record gives a node name `:"<node_sname>-<port>@<target>"`,
  whose distribution port is the SRV port (see `Caravan.Epmd.node_name/3`).
  With `record_type: :a`, `:aaaa` or `:ip`, every address is a peer
  named `"<node_basename>@<ip>"`, as libcluster's `DNSPoll` and
  `dns_cluster` name them (`app@fd00::1` for IPv6, `:inet.ntoa/1`).

  Each poll looks the queries up, diffs the nodes found against the
  connected ones and acts: connects the new ones and, with `prune: true`,
  keeps out the nodes DNS no longer lists. A failed lookup changes nothing.
  An invalid config fails the start: `start_link/1` logs it and returns
  `{:error, {:invalid_config, message}}`.

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

  Without libcluster, it is a child with the same options:
  `{Caravan.Cluster.DnsStrategy, query: "_app._tcp.service.consul", node_sname: "app"}`.

  ## Options

    * `:query` (required) - the SRV name to look up, e.g.
      `"_app._tcp.service.consul"`, `"app.service.dc1.consul"` or
      `"_epmd._tcp.app.default.svc.cluster.local"`; or a list of them, all
      looked up at each poll (the nodes found are the union). Caravan 1.x's
      `:consul_service` is accepted as an alias. `:ignore` turns discovery off (dev and test).
    * `:node_sname` (required with SRV records) - the name part before
      the port, e.g. `"app"` for nodes named `app-4370@host`.
    * `:node_port` - `#{inspect(%Config{}.node_port)}` (default): the port is in the node name, as above;
      `:srv`: nodes are named `"<node_sname>@<host>"` and dialed on their SRV
      record's port (dynamic ports: see [the deployment guide](guides/deployment.md#dynamic-ports)).
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
    * `:poll_interval` - ms between lookups, give or take 10% at each
      poll (so nodes booted together do not keep polling in step). Default
      #{Config.default(:poll_interval)}. libcluster DNSPoll's `:polling_interval` is accepted as an
      alias.
    * `:nameservers` - e.g. `["127.0.0.1:8600"]` (see `Caravan.DNS`).
      Default: `Caravan.DNS.default_nameservers/0` (the epmd module's
      `CARAVAN_NAMESERVERS`, else the VM's as Caravan 1.x, else resolv.conf).
    * `:timeout` - bound on one lookup, ms. Default #{Config.default(:timeout)} (at most
      `:poll_interval`).
    * `:prune` - keep nodes that DNS no longer lists out of the cluster.
      Default `#{%Config{}.prune}` (as Caravan 1.x). See [Pruning](guides/discovery.md#pruning).
    * `:leave_after` - authoritative answers in a row without this node
      (once listed) after which it stops connecting (and leaves, with
      `prune: true`); also how many times a departed node is asked to leave
      before it is disconnected. Default #{Config.default(:leave_after)}.
    * `:max_nodes` - the most nodes one poll takes from DNS. Default
      #{Config.default(:max_nodes)}. Node names become atoms, which are never collected: a poll creates at
      most `:max_nodes` new atoms, whatever the answer holds.
    * `:connect_timeout` - bound on one connect, ms. Default #{Config.default(:connect_timeout)}.
    * `:connect_concurrency` - connects in flight at once. Default #{Config.default(:connect_concurrency)}.
    * `:dns_client` - a `Caravan.DnsClient`. Default
      `#{inspect(%Config{}.dns_client)}`; `Caravan.DnsClient.InetRes` is Caravan
      1.x's client on OTP's `:inet_res`.
    * `:report_interval` - ms between repeated warnings about a node DNS
      lists that stays unreachable. Default #{Config.default(:report_interval)}.
    * `:topology`, `:connect`, `:disconnect`, `:list_nodes` - given by
      libcluster; when started without it: `#{inspect(%Config{}.topology)}`,
      `#{inspect(%Config{}.connect)}`, `#{inspect(%Config{}.disconnect)}`,
      `#{inspect(%Config{}.list_nodes)}`.

  The guides carry the rest: [what a poll does](guides/discovery.md#what-a-poll-does),
  [pruning](guides/discovery.md#pruning), [libcluster's logs and
  telemetry](guides/discovery.md#under-libcluster-its-logs-and-telemetry),
  [Consul, Nomad and Kubernetes](guides/consul-nomad-kubernetes.md) and
  [troubleshooting](guides/troubleshooting.md). Inside,
  `Caravan.Cluster.Poll` runs each poll in its own process and
  `Caravan.Cluster.Act` applies its result to the state; `Caravan.Diagnose`
  asks the strategy (an internal `GenServer.call`), never the other way round.
  """
  use GenServer
  require Logger

  alias Caravan.Cluster.{Act, Connector, Leave, Membership, Poll, Warnings}
  alias Caravan.Cluster.DnsStrategy.State

  import Warnings, only: [log: 3]

  @doc false
  # The name leave requests are sent to (Caravan.Cluster.Leave).
  defdelegate registered_name(topology), to: Leave

  @doc """
  A child spec. The id is the `:topology` (libcluster gives each topology
  its own) or `#{inspect(__MODULE__)}`.
  """
  @spec child_spec([Config.libcluster_state()] | keyword()) :: Supervisor.child_spec()
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

  Returns `{:ok, pid}`, `:ignore` with `query: :ignore`, or `{:error, {:invalid_config, message}}` after
  logging the message when the config is invalid (an unknown key, with the
  nearest known one, or a bad value): the start fails, so a typo stops
  the application's boot instead of leaving the node unclustered.
  """
  @spec start_link([Config.libcluster_state()] | keyword()) :: GenServer.on_start()
  def start_link([%{config: _} = state]), do: GenServer.start_link(__MODULE__, state)
  def start_link(opts) when is_list(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc false
  # What the strategy `server` (a pid or name) runs with and last found, for
  # Caravan.diagnose/1 (not public API): {:ok, %{config: config, last_poll:
  # last_poll}} (State.last_poll/0 type, nil before the first poll ends), or
  # {:error, reason} when it does not answer within `timeout` ms.
  @spec status(GenServer.server(), timeout()) ::
          {:ok, %{config: Config.t(), last_poll: State.last_poll() | nil}} | {:error, term()}
  def status(server, timeout \\ 1_000) do
    {:ok, GenServer.call(server, :caravan_status, timeout)}
  catch
    :exit, reason -> {:error, reason}
  end

  @impl GenServer
  def init(arg) do
    case Config.off?(arg) || Config.new(arg) do
      true ->
        :ignore

      {:ok, config} ->
        # The first poll at once: nodes that ask first start their connects
        # while the others' lookups queue behind them (bench/README.md).
        send(self(), :poll)
        # nodeup events, to keep out nodes DNS no longer lists (Act.nodeup/2);
        # leave requests arrive under this name.
        _ = :net_kernel.monitor_nodes(true)
        _ = Leave.register(config)
        Leave.warn_otp_settings(config)
        Warnings.at_start(config)
        {:ok, State.new(config)}

      {:error, {_kind, message}} ->
        Logger.error("[caravan] #{inspect(__MODULE__)} not started: #{message}")
        {:stop, {:invalid_config, message}}
    end
  end

  @impl GenServer
  def handle_call(:caravan_status, _from, %State{} = state),
    do: {:reply, %{config: state.config, last_poll: state.last_poll}, state}

  @impl GenServer
  def handle_info(:poll, %State{config: config} = state) do
    Process.send_after(self(), :poll, Poll.next_delay(config.poll_interval))

    if state.poll do
      # Not skipped: it starts when the running one ends (at most one
      # waits), so a lookup that outlasts the interval under load (a boot
      # storm) does not cost a whole extra interval.
      log(:debug, config, "previous poll still running; the next starts when it ends")
      {:noreply, %{state | repoll: true}}
    else
      {:noreply, %{state | poll: start_poll(state)}}
    end
  end

  # A fresh look at DNS, out of the timer's rhythm (Act.nodeup/2).
  def handle_info(:repoll, %State{} = state) do
    if state.poll,
      do: {:noreply, %{state | repoll: true}},
      else: {:noreply, %{state | poll: start_poll(state)}}
  end

  def handle_info({:caravan_poll, tag, result}, %State{poll: {tag, monitor}} = state) do
    Process.demonitor(monitor, [:flush])
    {:noreply, %{state | poll: nil} |> Act.poll(result) |> repoll()}
  end

  def handle_info({:DOWN, monitor, :process, _pid, reason}, %State{poll: {_tag, monitor}} = state) do
    {level, warnings} = Warnings.warn(state.warnings, :poll_crash)
    log(level, state.config, "poll crashed: #{inspect(reason)}")
    {:noreply, repoll(%{state | poll: nil, warnings: warnings})}
  end

  def handle_info({:nodeup, node}, state), do: {:noreply, Act.nodeup(state, node)}
  def handle_info({:nodedown, _node}, state), do: {:noreply, state}

  def handle_info({:caravan_leave, _topology, from}, state) when is_atom(from),
    do: {:noreply, Act.asked_to_leave(state, from)}

  def handle_info({:caravan_why, node, why}, state), do: {:noreply, Act.why(state, node, why)}

  # A connect's result or timeout, or its process's :DOWN (Connector.handle/2).
  def handle_info({Connector, _, _} = message, state), do: connector(message, state)
  def handle_info({:DOWN, _, :process, _, _} = message, state), do: connector(message, state)

  # Anything else is logged at debug and ignored, as OTP expects.
  def handle_info(message, %State{config: config} = state) do
    log(:debug, config, "ignored an unexpected message: #{inspect(message, limit: 10)}")
    {:noreply, state}
  end

  defp connector(message, state) do
    case Connector.handle(state.connector, message) do
      {:done, node, result, connector} ->
        {:noreply, Act.connected(%{state | connector: connector}, node, result)}

      :unknown ->
        {:noreply, state}
    end
  end

  # One process per poll (Caravan.Cluster.Poll); a node that has left dials no one early.
  defp start_poll(%State{config: config, membership: membership}) do
    {owner, tag, dial?} = {self(), make_ref(), Membership.dial?(membership)}

    {_pid, monitor} =
      spawn_monitor(fn -> send(owner, {:caravan_poll, tag, Poll.run(config, dial?)}) end)

    {tag, monitor}
  end

  # The poll asked for while the last one ran, if any.
  defp repoll(%State{repoll: true, poll: nil} = state),
    do: %{state | repoll: false, poll: start_poll(state)}

  defp repoll(state), do: state
end
