defmodule Caravan.Cluster.MembershipTrimmedTest do
  # Answers trimmed without a sign (a forwarder in front of Consul) against
  # whole answers that change (a rolling deploy): the rule in
  # Caravan.Cluster.Membership and guides/consul-nomad-kubernetes.md.
  use ExUnit.Case, async: true

  alias Caravan.Cluster.Membership

  @me :"app-1@me"
  @all for i <- 1..10, do: :"app-#{i}@n#{i}"

  # poll_interval 1000 ms: a suspicion lasts 30 polls.
  defp new, do: Membership.new(@me, prune: true, poll_interval: 1_000)
  defp auth(m, nodes), do: m |> Membership.authoritative(nodes) |> elem(0)

  # `n` answers of 4 of @all (plus this node), a different subset each time.
  defp trimmed(m, n, nodes \\ @all) do
    Enum.reduce(1..n, m, fn _, m -> auth(m, [@me | Enum.take_random(nodes, 4)]) end)
  end

  test "misses_needed/2: (1 - k/n)^m <= 1e-6" do
    assert Membership.misses_needed(11, 40) == 43
    assert Membership.misses_needed(11, 300) == 370
    assert Membership.misses_needed(20, 40) == 20
    assert Membership.misses_needed(40, 40) == 1
  end

  test "trimmed answers: nothing departs, every node seen is dialed, trimmed/1 says so" do
    m = trimmed(new(), 40)
    assert m.departed == %{}
    assert Membership.dial?(m)
    assert {5, 11} = Membership.trimmed(m)
    assert Enum.sort(Membership.to_dial(m, [], [])) == Enum.sort(@all)
    assert Membership.to_dial(m, [], Enum.take(@all, 9)) == [List.last(@all)]
  end

  test "through trimmed answers, a node gone for misses_needed distinct answers departs" do
    [gone | rest] = @all
    m = trimmed(new(), 10) |> auth([@me, gone | Enum.take(rest, 3)])
    # 4 of the 9 others (plus this node) each time, never the same twice in a row.
    answers =
      Stream.map(Stream.iterate(0, &(&1 + 1)), &[@me | Enum.slice(rest ++ rest, rem(&1, 9), 4)])

    need = Membership.misses_needed(5, 11)
    m = answers |> Enum.take(need - 1) |> Enum.reduce(m, &auth(&2, &1))
    refute Membership.refuse?(m, gone)
    {m, events} = Membership.authoritative(m, answers |> Enum.at(need - 1))
    assert {:departed, [gone]} in events
    assert Membership.refuse?(m, gone)
  end

  test "once trimming shows, a repeated answer (a forwarder's cache) counts for nothing" do
    m = trimmed(new(), 10)
    assert Membership.trimmed(m)
    answer = [@me | Enum.take(@all, 4)]
    m = auth(m, answer)
    m = Enum.reduce(1..28, m, fn _, m -> auth(m, answer) end)
    assert m.departed == %{}
  end

  test "a rolling deploy through whole answers: no warning, the old node departs after leave_after answers" do
    [a, b, c] = Enum.take(@all, 3)
    m = new() |> auth([@me, a, b])
    # b replaced by c in one answer: suspect, b not departed yet.
    {m, events} = Membership.authoritative(m, [@me, a, c])
    assert events == []
    assert Membership.trimmed(m) == nil
    assert Membership.to_dial(m, [c], []) == [c]
    {m, []} = Membership.authoritative(m, [@me, a, c])
    # The third answer in a row without b (leave_after 3): departed.
    {m, events} = Membership.authoritative(m, [@me, a, c])
    assert events == [departed: [b]]
    assert Membership.refuse?(m, b)
    assert Membership.trimmed(m) == nil
  end

  test "the evidence decays: whole answers again, a dropped node departs at once" do
    m = trimmed(new(), 20)
    m = Enum.reduce(1..30, m, fn _, m -> auth(m, [@me | @all]) end)
    assert Membership.trimmed(m) == nil
    {_m, events} = Membership.authoritative(m, [@me | tl(@all)])
    assert events == [departed: [hd(@all)]]
  end

  test "this node through trimmed answers: it leaves only after misses_needed distinct answers" do
    others = tl(@all)
    m = new() |> auth([@me | others])
    m = trimmed(m, 3, others)
    assert Membership.dial?(m)
    m = Enum.reduce(1..10, m, fn _, m -> auth(m, Enum.take_random(others, 4)) end)
    assert Membership.dial?(m)
  end
end
