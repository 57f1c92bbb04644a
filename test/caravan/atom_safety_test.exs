defmodule Caravan.AtomSafetyTest do
  # Node names from DNS become atoms, and atoms are never collected. The
  # strategy makes at most :max_nodes new atoms per poll, and none from
  # names that fail its filter. The answers here change at every poll,
  # which dnsmasq cannot do (its records change only by restart), so a DNS
  # client double stands in for the DNS server: the strategy code under
  # test is the same as with the native client.
  use ExUnit.Case, async: false

  import Caravan.Test.Topology, only: [state: 3]
  alias Caravan.Cluster.DnsStrategy

  defmodule ChurningClient do
    @moduledoc false
    # Each call answers `per_answer` valid targets never seen before, plus
    # `junk` targets that are not host names, and counts the calls.
    @behaviour Caravan.DnsClient

    @impl true
    def get_nodes(_query), do: get_nodes(nil, [])

    @impl true
    def get_nodes(_query, _opts) do
      {counter, run, per_answer, junk} = :persistent_term.get(__MODULE__)
      :counters.add(counter, 1, 1)
      poll = :counters.get(counter, 1)

      valid = for i <- 1..per_answer, do: {6000 + i, "r#{run}-p#{poll}-n#{i}.churn.example"}
      bad = for i <- 1..junk, do: {6000 + i, "bad host #{poll}-#{i}!"}
      {:ok, valid ++ bad}
    end
  end

  # Starts a strategy on the churning client and waits for `polls` lookups;
  # returns how many atoms the run added.
  defp run(polls, per_answer, max_nodes) do
    counter = :counters.new(1, [])
    run = System.unique_integer([:positive])
    :persistent_term.put(ChurningClient, {counter, run, per_answer, 5})

    config = [
      query: "churn",
      node_sname: "app",
      dns_client: ChurningClient,
      poll_interval: 1,
      max_nodes: max_nodes,
      connect_concurrency: 64
    ]

    before = :erlang.system_info(:atom_count)
    pid = start_supervised!({DnsStrategy, [state(config, self(), [])]})
    wait_for(counter, polls)
    stop_supervised!(:test)
    refute Process.alive?(pid)
    flush()
    {:erlang.system_info(:atom_count) - before, :counters.get(counter, 1)}
  end

  defp wait_for(counter, polls) do
    if :counters.get(counter, 1) < polls do
      Process.sleep(20)
      flush()
      wait_for(counter, polls)
    end
  end

  defp flush do
    receive do
      {:connect, _} -> flush()
    after
      0 -> :ok
    end
  end

  setup do
    # A short run first, so the atoms of code loaded on first use (the
    # strategy, Task, Logger) are not counted against the cap.
    ExUnit.CaptureLog.capture_log(fn -> run(5, 50, 5) end)
    :ok
  end

  @tag timeout: 120_000
  test "1000 polls of ever-changing answers add at most max_nodes atoms per poll" do
    ExUnit.CaptureLog.capture_log(fn ->
      {grown, polls} = run(1_000, 50, 5)
      # Every poll lists 50 new valid names and 5 junk ones; the cap of 5
      # bounds the atoms to 5 per poll. (The last poll may still have been
      # running when it was counted, hence polls, not 1000.)
      assert grown <= polls * 5 + 50, "#{grown} atoms after #{polls} polls"
      assert grown >= 1_000 * 5 - 50, "the test did not churn: #{grown} atoms"
    end)

    # No junk target became an atom.
    assert_raise ArgumentError, fn -> String.to_existing_atom("app-6001@bad host 1-1!") end
  end

  test "without the cap, the same answers make every name an atom" do
    ExUnit.CaptureLog.capture_log(fn ->
      {grown, _polls} = run(100, 50, 1_024)
      assert grown >= 100 * 50 - 50, "#{grown} atoms"
    end)
  end
end
