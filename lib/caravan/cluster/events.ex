defmodule Caravan.Cluster.Events do
  @moduledoc false
  # One job: the strategy's membership events. It applies a poll's answer
  # to the membership (the decisions are Caravan.Cluster.Membership's),
  # answers a departed node's nodeup and a member's leave request, and
  # carries out what is decided (Caravan.Cluster.Leave: ask, leave,
  # disconnect; Caravan.Cluster.Connector: cancel connects). Each function
  # takes and returns the strategy's state (Caravan.Cluster.DnsStrategy).

  require Logger

  import Caravan.Cluster.Log, only: [log: 3]

  alias Caravan.Cluster.{Config, Connector, Leave, Membership}

  # A node DNS no longer lists (as of the last authoritative answer) is
  # connected again, whoever dialed: the strategy gets :repoll, to look at
  # DNS again now and ask the node to leave if the fresh answer still does
  # not list it.
  @spec nodeup(map(), node()) :: map()
  def nodeup(state, node) do
    if Membership.refuse?(state.membership, node) do
      log(:debug, state.config, "#{node}, which DNS no longer lists, connected; checking DNS")
      send(self(), :repoll)
    end

    state
  end

  # A member asks this node to leave: its DNS answer no longer lists us.
  # Every request is carried out (global may have connected this node to
  # others since the last one); the warning is said once.
  @spec asked_to_leave(map(), node()) :: map()
  def asked_to_leave(state, from) do
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
    cancel_connects(state, Connector.pending(state.connector))
  end

  # Applies one poll's answer to the membership and carries out what it
  # decides: logs, leaving, asking departed nodes to leave, disconnecting
  # those that did not, cancelling connects to them.
  @spec poll(map(), map()) :: map()
  def poll(%{config: config} = state, result) do
    # This node's name, as of now (distribution may start after init).
    membership = %{state.membership | self: node()}

    {membership, events} =
      if result.authoritative?,
        do: Membership.authoritative(membership, result.found),
        else: Membership.partial(membership, result.found)

    state = Enum.reduce(events, %{state | membership: membership}, &event/2)

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

  defp event({:departed, nodes}, %{config: config} = state) do
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

  defp event({:returned, nodes}, %{config: config} = state) do
    log(:debug, config, "DNS lists #{Enum.join(nodes, ", ")} again")
    state
  end

  defp event({:self_missing, n}, %{config: config} = state) do
    log(
      :debug,
      config,
      "DNS does not list this node (#{n} of #{config.leave_after} authoritative answers)"
    )

    state
  end

  defp event({:leave, :missing}, %{config: config} = state) do
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

  defp event(:back, %{config: config} = state) do
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
end
