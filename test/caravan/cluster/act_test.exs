defmodule Caravan.Cluster.ActTest do
  # The strategy's "act" (Caravan.Cluster.Act), its membership events
  # included, on its own, applied to the state the
  # strategy's init/1 builds, with poll results written by hand. The same
  # behaviour through a running strategy against real DNS servers:
  # dns_strategy_test.exs, prune_test.exs, strategy_diagnostics_test.exs.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Caravan.Cluster.{Act, Connector, DnsStrategy, Membership}

  @web2 :"app-4802@web2.node.dc1.consul"
  @web3 :"app-4803@web3.node.dc1.consul"

  # The strategy's state for `opts`; init/1 also registers this process
  # under the topology's name and sends it :poll, which is dropped.
  defp state(opts) do
    topology = :"act_test_#{System.unique_integer([:positive])}"
    config = [query: "_app._tcp.service.consul", node_sname: "app", topology: topology]

    {{:ok, state}, _log} = with_log(fn -> DnsStrategy.init(config ++ opts) end)
    state
  end

  defp result(found, opts \\ []) do
    Map.merge(
      %{
        found: found,
        answered: ["_app._tcp.service.consul"],
        errors: [],
        invalid: [],
        dropped: 0,
        authoritative?: true,
        connected: :erlang.nodes(:connected),
        new: []
      },
      Map.new(opts)
    )
  end

  defp polls(state, results), do: Enum.reduce(results, state, &Act.poll(&2, &1))

  test "polls that find nobody: one warning at the third, one info line when DNS lists nodes" do
    state = state([])

    {state, log} = with_log(fn -> polls(state, [result([]), result([]), result([])]) end)
    assert [_] = Regex.scan(~r/\[warning\].*DNS has listed no instances for 3 polls/, log)
    assert log =~ ~s["_app._tcp.service.consul" (nameservers: ]

    {state, log} = with_log(fn -> polls(state, [result([]), result([@web2])]) end)
    refute log =~ "no instances"
    assert log =~ ~r/\[info\].*DNS lists 1 node\(s\) again/
    assert %{found: [@web2], answered: ["_app._tcp.service.consul"]} = state.last_poll
  end

  test "failed lookups start no silence streak: one warning for the failure, none for silence" do
    failed = result([], answered: [], errors: [{"_app._tcp.service.consul", :timeout}])
    failed = %{failed | authoritative?: false}

    {_state, log} = with_log(fn -> polls(state([]), List.duplicate(failed, 4)) end)
    assert [_] = Regex.scan(~r/\[warning\].*lookup of "_app._tcp.service.consul" failed/, log)
    refute log =~ "no instances"
  end

  test "a connect: info when it works; a failure explained once, again when it changes" do
    state = state(report_interval: 60_000)
    node = :"app-1@127.0.0.1"

    {_state, log} = with_log(fn -> Act.connected(state, @web2, true) end)
    assert log =~ ~r/\[info\].*connected to #{@web2}/

    state = Act.connected(state, node, :timeout)
    assert_receive {:caravan_why, ^node, why}, 10_000
    assert why =~ ~r/^no answer within connect_timeout; .*127\.0\.0\.1:1/
    {state, log} = with_log(fn -> Act.why(state, node, why) end)
    assert log =~ ~r/\[warning\].*cannot connect to #{node}: no answer within connect_timeout/

    # A failure within report_interval is probed again, and its explanation
    # logged only when it changed (a peer that came up with another cookie).
    {state, log} = with_log([level: :debug], fn -> Act.connected(state, node, :timeout) end)
    refute log =~ "cannot connect to #{node}"
    assert_receive {:caravan_why, ^node, ^why}, 10_000
    {state, log} = with_log([level: :debug], fn -> Act.why(state, node, why) end)
    assert log == ""

    {_state, log} = with_log(fn -> Act.why(state, node, "because") end)

    assert log =~
             ~r/\[warning\].*cannot connect to #{node}: because \(reported again every 60 s/
  end

  test "a node DNS drops is departed (prune: true): its nodeup asks for a fresh poll" do
    state = state(prune: true)

    {state, log} = with_log(fn -> polls(state, [result([@web2, @web3]), result([@web2])]) end)

    assert log =~ ~r/\[info\].*DNS no longer lists #{@web3}; keeping it out \(prune: true\)/
    assert Membership.refuse?(state.membership, @web3)

    assert Act.nodeup(state, @web3) == state
    assert_received :repoll
    Act.nodeup(state, @web2)
    refute_received :repoll

    # A failed lookup decides nothing; the next answer listing it brings it back.
    state = Act.poll(state, %{result([]) | authoritative?: false})
    assert Membership.refuse?(state.membership, @web3)
    state = Act.poll(state, result([@web2, @web3]))
    refute Membership.refuse?(state.membership, @web3)
  end

  test "with prune: false a dropped node is not refused and nothing says it is kept out" do
    state = state(prune: false)

    {state, log} = with_log(fn -> polls(state, [result([@web2, @web3]), result([@web2])]) end)

    refute log =~ "keeping it out"
    refute Membership.refuse?(state.membership, @web3)
    Act.nodeup(state, @web3)
    refute_received :repoll
  end

  # A connect MFA that never returns (cancelled connects are killed).
  def hang(_node), do: Process.sleep(:infinity)

  test "DNS drops this node for leave_after answers: it stops dialing, says so once, and comes back" do
    state = state(prune: false, leave_after: 2, connect: {__MODULE__, :hang, []})
    me = node()

    state = Act.poll(state, result([me, @web2], new: [@web3]))
    assert Membership.dial?(state.membership)
    assert Connector.pending(state.connector) == [@web3]

    {state, log} =
      with_log(fn -> polls(state, [result([@web2]), result([@web2]), result([@web2])]) end)

    assert [_] =
             Regex.scan(
               ~r/\[warning\].*DNS has not listed this node \(#{me}\) in 2 authoritative answers in a row; stopped connecting \(prune: false/,
               log
             )

    refute Membership.dial?(state.membership)
    # The connect in flight is cancelled, and new nodes are not dialed.
    assert Connector.pending(state.connector) == []
    state = Act.poll(state, result([@web2], new: [@web3]))
    assert Connector.pending(state.connector) == []

    {state, log} = with_log(fn -> Act.poll(state, result([me, @web2], new: [@web3])) end)
    assert log =~ ~r/\[info\].*DNS lists this node again; connecting again/
    assert Membership.dial?(state.membership)
    assert Connector.pending(state.connector) == [@web3]
    Connector.cancel(state.connector, [@web3])
  end
end
