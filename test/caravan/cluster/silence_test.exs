defmodule Caravan.Cluster.SilenceTest do
  use ExUnit.Case, async: true

  # Silent DNS and unreachable nodes: the ledgers of Caravan.Cluster.Warnings.
  alias Caravan.Cluster.Warnings

  @self :"app-4370@web1"

  defp run(silence, polls), do: Enum.map_reduce(polls, silence, &Warnings.silence(&2, &1, @self))

  test "no instances: one :start after 3 polls, one :end when nodes come" do
    {events, _} = run(Warnings.new(), [[], [], [], [], [], [@self, :"app-4370@web2"]])
    assert events == [nil, nil, {:start, :no_instances}, nil, nil, {:end, :no_instances}]
  end

  test "only this node is its own streak; a failed lookup neither starts nor ends one" do
    {events, _} = run(Warnings.new(), [[@self], :unknown, [@self], [@self], :unknown, [@self]])
    assert events == [nil, nil, nil, {:start, :only_self}, nil, nil]
  end

  test "a short silence is not reported, and its end says nothing" do
    {events, _} = run(Warnings.new(), [[], [], [@self, :"app-4370@web2"], []])
    assert events == [nil, nil, nil, nil]
  end

  test "a change of silence ends the reported streak and starts counting anew" do
    {events, _} = run(Warnings.new(), [[], [], [], [@self], [@self], [@self]])

    assert events == [
             nil,
             nil,
             {:start, :no_instances},
             {:end, :no_instances},
             nil,
             {:start, :only_self}
           ]
  end

  test "unreachable: reported at the first failure, then at most once per interval" do
    # The failure streaks are the connect pool's (Caravan.Cluster.Connector).
    u = %Caravan.Cluster.Connector{report_interval: 1_000}
    assert {true, u} = Caravan.Cluster.Connector.report?(u, :a@h, 0)
    assert {false, u} = Caravan.Cluster.Connector.report?(u, :a@h, 999)
    assert {true, u} = Caravan.Cluster.Connector.report?(u, :b@h, 500)
    assert {true, u} = Caravan.Cluster.Connector.report?(u, :a@h, 1_000)
    # Connected (or gone from DNS): the next failure is reported at once.
    u = %{u | failing: Map.delete(u.failing, :a@h)}
    assert {true, u} = Caravan.Cluster.Connector.report?(u, :a@h, 1_001)
    u = Caravan.Cluster.Connector.keep_streaks(u, [:a@h, :c@h], [:c@h])
    assert {true, _} = Caravan.Cluster.Connector.report?(u, :b@h, 1_002)
  end
end
