defmodule Caravan.Cluster.Act do
  @moduledoc false
  # One job: the "act" of the strategy's "poll, diff, act". It applies to
  # the strategy's state (Caravan.Cluster.DnsStrategy.State) a poll's
  # result, a connect's result, a departed node's nodeup and a member's
  # leave request: the decisions are Caravan.Cluster.Membership's, what is
  # worth saying Caravan.Cluster.Warnings', and it carries them out (logs;
  # Caravan.Cluster.Leave: ask, leave, disconnect; Caravan.Cluster.Connector:
  # connect, cancel). After a poll it alone writes the state's membership
  # and connector. Each function takes and returns the state.

  alias Caravan.Cluster.{Config, Connector, Leave, Libcluster, Membership, Poll, Warnings}
  alias Caravan.Cluster.DnsStrategy.State
  alias Caravan.Epmd.Probe

  import Warnings, only: [log: 3]

  @doc "Acts on a poll's result (`Caravan.Cluster.Poll.run/1`)."
  @spec poll(State.t(), Poll.t()) :: State.t()
  def poll(%State{config: config} = state, result) do
    {warnings, entries} = Warnings.poll(state.warnings, result, config)
    Enum.each(entries, fn {level, message} -> log(level, config, message) end)

    found = if result.authoritative?, do: result.found, else: :unknown
    {event, warnings} = Warnings.silence(warnings, found, node())
    if event, do: say(config, {:silence, event, result.found, result.connected})

    last_poll =
      result
      |> Map.take([:found, :answered, :errors, :invalid])
      |> Map.put(:at, System.monotonic_time())

    connector = Connector.keep_streaks(state.connector, result.found, result.connected)
    state = membership(%{state | warnings: warnings, connector: connector}, result)
    trimmed = Membership.trimmed(state.membership)
    state = trimmed(%{state | last_poll: Map.put(last_poll, :trimmed, trimmed)}, trimmed)
    dial = Membership.to_dial(state.membership, result.new, result.connected)

    if Membership.dial?(state.membership),
      do: %{state | connector: Connector.enqueue(state.connector, dial)},
      else: state
  end

  @doc """
  Connects to `nodes` at once, each in a process of its own, outside the
  connect pool: a poll's early dial (`Caravan.Cluster.Poll.run/2`), of the
  peers a doubted UDP answer names. The connect's own bound
  (`net_setuptime`) ends it; the poll's complete answer then queues any
  node still unconnected in the pool as usual. Returns `:ok`.
  """
  @spec dial(Config.t(), [node()]) :: :ok
  def dial(%Config{} = config, nodes) do
    Enum.each(nodes, fn node -> spawn(fn -> dial_one(config, node) end) end)
  end

  defp dial_one(%Config{libcluster: true} = config, node),
    do: Libcluster.connect(config.topology, config.connect, config.list_nodes, node)

  defp dial_one(%Config{connect: {m, f, a}}, node), do: apply(m, f, a ++ [node])

  @doc """
  Acts on a connect's result (`Caravan.Cluster.Connector.handle/2`). Under
  libcluster, libcluster has logged the connect at info already. A failed
  connect is explained (`Caravan.Epmd.Probe.why/2`, in its own
  process, which sends `{:caravan_why, node, text}` for `why/3`) at the
  first failure of a streak and then once per `report_interval`; the
  others are not logged (a peer not up yet is one line per streak).
  """
  @spec connected(State.t(), node(), Connector.result()) :: State.t()
  def connected(%State{config: config} = state, node, true) do
    # Under libcluster, libcluster says it, unless the connect bypassed it.
    {bypassed?, connector} = Connector.connected(state.connector, node)
    level = if config.libcluster and not bypassed?, do: :debug, else: :info
    log(level, config, "connected to #{node}")
    %{state | connector: connector}
  end

  def connected(%State{config: config} = state, node, :ignored) do
    log(:debug, config, "connect to #{node} ignored (this node is not distributed)")
    state
  end

  def connected(%State{} = state, node, failure) do
    now = System.monotonic_time(:millisecond)
    {_report?, connector} = Connector.report?(state.connector, node, now)
    owner = self()
    spawn(fn -> send(owner, {:caravan_why, node, Probe.why(node, failure)}) end)
    %{state | connector: connector}
  end

  @doc """
  The explanation of a failed connect, at warning: the first of a report
  (`Caravan.Cluster.Connector.report?/3`), or one that differs from the
  last logged (a peer that came up with another cookie); else nothing.
  """
  @spec why(State.t(), node(), String.t()) :: State.t()
  def why(%State{config: config} = state, node, why) do
    {log?, connector} = Connector.explained(state.connector, node, why)
    if log?, do: say(config, {:unreachable, node, why})
    %{state | connector: connector}
  end

  @doc """
  A node DNS no longer lists (as of the last authoritative answer) is
  connected again, whoever dialed: the strategy gets `:repoll`, to look at
  DNS again now and ask the node to leave if the fresh answer still does
  not list it.
  """
  @spec nodeup(State.t(), node()) :: State.t()
  def nodeup(%State{} = state, node) do
    if Membership.refuse?(state.membership, node) do
      log(:debug, state.config, "#{node}, which DNS no longer lists, connected; checking DNS")
      send(self(), :repoll)
    end

    state
  end

  @doc """
  A member asks this node to leave: its DNS answer no longer lists us.
  Every request is carried out (global may have connected this node to
  others since the last one); the warning is said once.
  """
  @spec asked_to_leave(State.t(), node()) :: State.t()
  def asked_to_leave(%State{config: config} = state, from) do
    {membership, first?} = Membership.asked_to_leave(state.membership, from)

    if first?,
      do: say(config, {:asked_to_leave, from}),
      else: log(:debug, config, "#{from} asked this node to leave again")

    Leave.leave()
    cancel_connects(%{state | membership: membership}, Connector.pending(state.connector))
  end

  # Applies the answer to the membership and carries out what it decides:
  # logs, leaving, asking departed nodes to leave, disconnecting those that
  # did not, cancelling connects to them.
  defp membership(%State{config: config} = state, result) do
    # This node's name, as of now (distribution may start after init).
    membership = %{state.membership | self: node()}

    {membership, events} =
      if result.authoritative?,
        do: Membership.authoritative(membership, result.found),
        else: Membership.partial(membership, result.found)

    state = Enum.reduce(events, %{state | membership: membership}, &event/2)

    if result.authoritative? do
      {membership, ask, force} = Membership.enforce(state.membership, result.connected)
      Enum.each(ask, &Leave.ask(config, &1))
      Enum.each(force, &Leave.disconnect(config, &1))
      state = %{state | membership: membership}
      cancel_connects(state, Membership.cancel(membership, Connector.pending(state.connector)))
    else
      state
    end
  end

  # Answers hold k of n instances seen: warned of once, with the fix.
  defp trimmed(state, nil), do: state

  defp trimmed(%State{config: config} = state, trimmed) do
    {level, warnings} = Warnings.warn(state.warnings, :trimmed)
    log(level, config, elem(Warnings.text({:trimmed, trimmed}, config), 1))
    %{state | warnings: warnings}
  end

  defp event({:leave, :missing} = event, %State{config: config} = state) do
    say(config, event)
    if config.prune, do: Leave.leave()
    cancel_connects(state, Connector.pending(state.connector))
  end

  defp event(event, state) do
    say(state.config, event)
    state
  end

  defp say(config, what) do
    {level, message} = Warnings.text(what, config)
    log(level, config, message)
  end

  # Stops the connects to `nodes` (Connector.cancel/2) and aborts a
  # connection setup still pending in net_kernel (erlang:disconnect_node/1
  # on a pending connection cancels it; OTP would otherwise run it to
  # net_setuptime, 7 s). A connection that came up meanwhile is left alone:
  # a departed node that is connected is asked to leave instead.
  defp cancel_connects(state, []), do: state

  defp cancel_connects(%State{config: config} = state, nodes) do
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
end
