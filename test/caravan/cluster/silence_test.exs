defmodule Caravan.Cluster.SilenceTest do
  use ExUnit.Case, async: true

  alias Caravan.Cluster.{Silence, Unreachable}

  @self :"app-4370@web1"

  defp run(silence, polls), do: Enum.map_reduce(polls, silence, &Silence.track(&2, &1, @self))

  test "no instances: one :start after #{Silence.polls()} polls, one :end when nodes come" do
    {events, _} = run(Silence.new(), [[], [], [], [], [], [@self, :"app-4370@web2"]])
    assert events == [nil, nil, {:start, :no_instances}, nil, nil, {:end, :no_instances}]
  end

  test "only this node is its own streak; a failed lookup neither starts nor ends one" do
    {events, _} = run(Silence.new(), [[@self], :unknown, [@self], [@self], :unknown, [@self]])
    assert events == [nil, nil, nil, {:start, :only_self}, nil, nil]
  end

  test "a short silence is not reported, and its end says nothing" do
    {events, _} = run(Silence.new(), [[], [], [@self, :"app-4370@web2"], []])
    assert events == [nil, nil, nil, nil]
  end

  test "a change of silence ends the reported streak and starts counting anew" do
    {events, _} = run(Silence.new(), [[], [], [], [@self], [@self], [@self]])

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
    u = Unreachable.new(1_000)
    assert {true, u} = Unreachable.failed(u, :a@h, 0)
    assert {false, u} = Unreachable.failed(u, :a@h, 999)
    assert {true, u} = Unreachable.failed(u, :b@h, 500)
    assert {true, u} = Unreachable.failed(u, :a@h, 1_000)
    # Connected (or gone from DNS): the next failure is reported at once.
    u = Unreachable.clear(u, :a@h)
    assert {true, u} = Unreachable.failed(u, :a@h, 1_001)
    u = Unreachable.keep(u, MapSet.new([:a@h]))
    assert {true, _} = Unreachable.failed(u, :b@h, 1_002)
  end
end
