defmodule Caravan.Cluster.MembershipTest do
  use ExUnit.Case, async: true

  alias Caravan.Cluster.Membership

  @me :"app-1@me"
  @a :"app-2@a"
  @b :"app-3@b"
  @c :"app-4@c"

  defp new(opts \\ []), do: Membership.new(@me, Keyword.merge([prune: true], opts))

  defp auth(m, nodes), do: Membership.authoritative(m, nodes)

  defp auth!(m, nodes), do: m |> auth(nodes) |> elem(0)

  describe "departed nodes" do
    test "a node listed before and missing from an authoritative answer is departed and refused" do
      m = new() |> auth!([@me, @a, @b])
      {m, events} = auth(m, [@me, @a])
      assert events == [{:departed, [@b]}]
      assert Membership.refuse?(m, @b)
      refute Membership.refuse?(m, @a)
    end

    test "it stays refused while DNS does not list it, and returns once listed again" do
      m = new() |> auth!([@me, @a, @b]) |> auth!([@me, @a])
      m = Enum.reduce(1..30, m, fn _, m -> auth!(m, [@me, @a]) end)
      assert Membership.refuse?(m, @b)
      {m, events} = auth(m, [@me, @a, @b])
      assert events == [{:returned, [@b]}]
      refute Membership.refuse?(m, @b)
    end

    test "a failed lookup (partial answer) concludes nothing, but a node it finds is listed again" do
      m = new() |> auth!([@me, @a, @b]) |> auth!([@me, @a])
      {m2, events} = Membership.partial(m, [])
      assert events == []
      assert Membership.refuse?(m2, @b)
      {m3, events} = Membership.partial(m, [@b])
      assert events == [{:returned, [@b]}]
      refute Membership.refuse?(m3, @b)
    end

    test "nodes DNS never listed (a remote shell, another topology) are never refused" do
      m = new() |> auth!([@me, @a]) |> auth!([@me])
      refute Membership.refuse?(m, @c)
      assert {_, [], []} = Membership.enforce(m, [@c])
    end

    test "with prune off nothing is refused or asked to leave" do
      m = new(prune: false) |> auth!([@me, @a, @b]) |> auth!([@me, @a])
      refute Membership.refuse?(m, @b)
      assert {_, [], []} = Membership.enforce(m, [@a, @b])
    end

    test "departed nodes are remembered up to max_departed, the most recent first" do
      m = new(max_departed: 2) |> auth!([@me, @a, @b, @c]) |> auth!([@me, @b, @c])
      m = m |> auth!([@me, @c]) |> auth!([@me])
      assert Enum.map([@a, @b, @c], &Membership.refuse?(m, &1)) == [false, true, true]
    end
  end

  describe "enforce/2" do
    test "a connected departed node is asked to leave each answer, then forced after leave_after" do
      m = new(leave_after: 2) |> auth!([@me, @a, @b]) |> auth!([@me, @a])
      {m, ask, force} = Membership.enforce(m, [@a, @b])
      assert {ask, force} == {[@b], []}
      {m, ask, force} = m |> auth!([@me, @a]) |> Membership.enforce([@a, @b])
      assert {ask, force} == {[@b], []}
      {m, ask, force} = m |> auth!([@me, @a]) |> Membership.enforce([@a, @b])
      assert {ask, force} == {[], [@b]}
      # Once it is gone, nothing more; if it comes back, it is asked again first.
      {m, [], []} = m |> auth!([@me, @a]) |> Membership.enforce([@a])
      assert {_, [@b], []} = m |> auth!([@me, @a]) |> Membership.enforce([@a, @b])
    end

    test "a node that left when asked once is only ever asked again, never forced" do
      m = new(leave_after: 2) |> auth!([@me, @a, @b]) |> auth!([@me, @a])
      {m, [@b], []} = Membership.enforce(m, [@a, @b])
      {m, [], []} = Membership.enforce(m, [@a])

      m =
        Enum.reduce(1..5, m, fn _, m ->
          {m, ask, force} = Membership.enforce(m, [@a, @b])
          assert {ask, force} == {[@b], []}
          m
        end)

      # Listed again, then departed again: it may be forced again.
      m = m |> auth!([@me, @a, @b]) |> auth!([@me, @a])
      {m, [@b], []} = Membership.enforce(m, [@a, @b])
      {m, [@b], []} = Membership.enforce(m, [@a, @b])
      assert {_, [], [@b]} = Membership.enforce(m, [@a, @b])
    end
  end

  describe "this node missing from DNS" do
    test "it leaves after leave_after authoritative answers in a row without it, and stops dialing" do
      m = new(leave_after: 3) |> auth!([@me, @a])
      {m, e1} = auth(m, [@a])
      {m, e2} = auth(m, [@a])
      assert Membership.dial?(m)
      {m, e3} = auth(m, [@a])
      {m, e4} = auth(m, [@a])
      assert [e1, e2, e3, e4] == [[self_missing: 1], [self_missing: 2], [leave: :missing], []]
      refute Membership.dial?(m)
      assert Membership.cancel(m, [@a]) == [@a]
    end

    test "failed lookups neither count nor reset the streak" do
      m = new(leave_after: 2) |> auth!([@me, @a]) |> auth!([@a])
      {m, []} = Membership.partial(m, [@a])
      {m, events} = auth(m, [@a])
      assert events == [leave: :missing]
      refute Membership.dial?(m)
    end

    test "a listed answer resets the streak" do
      m = new(leave_after: 2) |> auth!([@me, @a]) |> auth!([@a]) |> auth!([@me, @a])
      {m, events} = auth(m, [@a])
      assert events == [self_missing: 1]
      assert Membership.dial?(m)
    end

    test "at boot, before DNS ever listed it, it keeps dialing" do
      m = Enum.reduce(1..10, new(leave_after: 2), fn _, m -> auth!(m, [@a]) end)
      assert Membership.dial?(m)
    end

    test "it comes back at the first answer that lists it" do
      m = new(leave_after: 1) |> auth!([@me, @a]) |> auth!([@a])
      refute Membership.dial?(m)
      {m, events} = auth(m, [@me, @a])
      assert events == [:back]
      assert Membership.dial?(m)
    end

    test "asked to leave by a member: it stops dialing until DNS lists it" do
      m = new() |> auth!([@me, @a])
      {m, true} = Membership.asked_to_leave(m, @a)
      {m, false} = Membership.asked_to_leave(m, @a)
      refute Membership.dial?(m)
      {m, events} = auth(m, [@me, @a])
      assert events == [:back]
      assert Membership.dial?(m)
    end
  end

  test "cancel/2: connects to nodes the answer does not list" do
    m = new() |> auth!([@me, @a])
    assert Membership.cancel(m, [@a, @b, @c]) == [@b, @c]
  end
end
