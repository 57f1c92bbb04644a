defmodule Caravan.Cluster.WarningsTest do
  use ExUnit.Case, async: true

  alias Caravan.Cluster.Warnings

  test "a streak warns once, then debug, and its end is an info once" do
    w = Warnings.new()
    assert {nil, w} = Warnings.recover(w, :a)
    assert {:warning, w} = Warnings.warn(w, :a)
    assert {:debug, w} = Warnings.warn(w, :a)
    assert {:warning, w} = Warnings.warn(w, :b)
    assert {:info, w} = Warnings.recover(w, :a)
    assert {nil, w} = Warnings.recover(w, :a)
    assert {:warning, _} = Warnings.warn(w, :a)
    assert Warnings.warned?(w, :b)
  end

  test "clear and clear_if forget silently" do
    {_, w} = Warnings.warn(Warnings.new(), {:connect, :a@h})
    {_, w} = Warnings.warn(w, {:connect, :b@h})
    {_, w} = Warnings.warn(w, :other)
    w = Warnings.clear_if(w, &match?({:connect, :a@h}, &1))
    refute Warnings.warned?(w, {:connect, :a@h})
    assert Warnings.warned?(w, {:connect, :b@h})
    w = Warnings.clear(w, :other)
    assert {nil, _} = Warnings.recover(w, :other)
  end

  describe "poll/3: what a poll's result deserves in the log" do
    @config %{poll_interval: 100, max_nodes: 2}

    defp result(overrides) do
      Map.merge(
        %{found: [:a@h], answered: ["q"], errors: [], invalid: [], dropped: 0},
        Map.new(overrides)
      )
    end

    test "a failure streak: one warning, then debug, then one info when it works again" do
      failed = result(answered: [], found: [], errors: [{"q", {:timeout, "no answer"}}])
      {w, [{:warning, message}]} = Warnings.poll(Warnings.new(), failed, @config)
      assert message =~ ~s[lookup of "q" failed (timeout: no answer); keeping the cluster]
      assert message =~ "retrying about every 100 ms"
      {w, [{:debug, _}]} = Warnings.poll(w, failed, @config)
      {w, entries} = Warnings.poll(w, result([]), @config)

      assert [{:info, ~s(lookup of "q" works again)}, {:debug, "DNS lists 1 node(s)" <> _}] =
               entries

      # The same nodes again: nothing to say.
      {_w, []} = Warnings.poll(w, result([]), @config)
    end

    test "skipped records and a capped answer are warned of once while they last" do
      bad = result(invalid: ["port 0"], dropped: 3)
      {w, entries} = Warnings.poll(Warnings.new(), bad, @config)

      assert [{:debug, _}, {:warning, "skipped SRV records: port 0"}, {:warning, capped}] =
               entries

      assert capped =~ "DNS lists 4 nodes, more than max_nodes (2); ignored 3"
      {w, entries} = Warnings.poll(w, bad, @config)
      assert Enum.all?(entries, &match?({:debug, _}, &1))
      {w, _} = Warnings.poll(w, result([]), @config)
      {_w, entries} = Warnings.poll(w, bad, @config)
      assert Enum.count(entries, &match?({:warning, _}, &1)) == 2
    end

    test "connect warnings about nodes DNS no longer lists are forgotten" do
      {_, w} = Warnings.warn(Warnings.new(), {:connect, :gone@h})
      {_, w} = Warnings.warn(w, {:connect, :a@h})
      {w, _} = Warnings.poll(w, result([]), @config)
      refute Warnings.warned?(w, {:connect, :gone@h})
      assert Warnings.warned?(w, {:connect, :a@h})
    end
  end
end
