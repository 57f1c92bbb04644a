defmodule Caravan.Cluster.PollTest do
  # The poll's pure parts: records -> node names (capped before atoms are
  # made), authoritative or not, and the diff against connected nodes.
  # Lookups against real DNS servers are in DnsStrategyTest and DiscoveryTest.
  use ExUnit.Case, async: true

  alias Caravan.Cluster.{Config, Poll}

  doctest Poll

  test "the next poll comes within 10% of the interval, never before 1 ms, and the mean holds" do
    # A fixed seed: the draws below are the same at every run.
    :rand.seed(:exsss, {14, 11, 2026})
    delays = for _ <- 1..2_000, do: Poll.next_delay(1_000)
    assert Enum.min(delays) >= 900 and Enum.max(delays) <= 1_100
    # Not all the same: nodes in step drift apart.
    assert length(Enum.uniq(delays)) > 100
    mean = Enum.sum(delays) / length(delays)
    assert mean > 985 and mean < 1_015
    assert Poll.next_delay(1, 0.0) == 1
    assert_raise FunctionClauseError, fn -> Poll.next_delay(0, 0.5) end
  end

  defp config(opts \\ []),
    do: struct!(Config, Keyword.merge([node_sname: "app", queries: ["q1", "q2"]], opts))

  test "records become sorted unique node names; bad ones are reported" do
    answers = [
      {"q1", {:ok, [{4371, "b"}, {4370, ~c"a"}, {0, "z"}]}},
      {"q2", {:ok, [{4370, "a"}, {:invalid, "no address"}, :junk]}}
    ]

    result = Poll.names(answers, config())
    assert result.found == [:"app-4370@a", :"app-4371@b"]
    assert result.answered == ["q1", "q2"]
    assert [port0, "no address", junk] = result.invalid
    assert port0 =~ "app-0@z"
    assert junk =~ ":junk"
    assert result.authoritative?
  end

  test "a failed query or a capped answer is not authoritative" do
    failed = Poll.names([{"q1", {:ok, []}}, {"q2", {:error, {:timeout, "t"}}}], config())
    refute failed.authoritative?
    assert failed.errors == [{"q2", {:timeout, "t"}}]
    assert failed.answered == ["q1"]

    many = for port <- 5001..5010, do: {port, "h"}
    capped = Poll.names([{"q1", {:ok, many}}], config(max_nodes: 3))
    assert length(capped.found) == 3
    assert capped.dropped == 7
    refute capped.authoritative?
  end

  test "the cap comes before atoms are made" do
    sname = "capped#{System.unique_integer([:positive])}"
    names = for port <- 5001..5005, do: {port, "h"}
    Poll.names([{"q1", {:ok, names}}], config(node_sname: sname, max_nodes: 2))
    assert String.to_existing_atom("#{sname}-5002@h")
    assert_raise ArgumentError, fn -> String.to_existing_atom("#{sname}-5003@h") end
  end

  test "diff: new is found minus connected and this node" do
    result = %{found: [:a@h, :b@h], authoritative?: true}
    connected = MapSet.new([:a@h, :c@h])

    assert %{new: [:b@h]} = Poll.diff(result, connected)
    assert %{new: []} = Poll.diff(%{result | found: [node()]}, connected)
  end
end
