defmodule Caravan.LabTest do
  # The multi-host lab (Caravan.Test.Lab): five hosts, each a network
  # namespace with one real BEAM node (Caravan's flags, no epmd, OTP 25
  # defaults: connect_all true, prevent_overlapping_partitions true), on a
  # bridge; a DNS server in its own namespace; poll 1 s; faults by
  # iptables and SIGSTOP. Each node records its nodeups/nodedowns with
  # reasons, so the tests count collateral nodedowns: nodedowns between
  # nodes DNS lists the whole time. Figures are printed ("lab: ...").
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.{BeamNode, Lab}

  @moduletag :lab
  @moduletag timeout: 300_000

  if reason = Lab.unavailable_reason() do
    IO.puts("Caravan.LabTest skipped: #{reason}")
    @moduletag skip: "the multi-host lab cannot run here: #{reason}"
  end

  @all [1, 2, 3, 4, 5]
  # Ticks every 2 s, a silent peer is down after 8 to 10 s: shorter than
  # OTP's 60 s so a frozen node is detected quickly, long enough for a
  # loaded 2-core machine.
  @args ["-kernel", "net_ticktime", "8"]

  defp lab(opts \\ []) do
    lab = Lab.start(length(@all), Keyword.put_new(opts, :args, @args))
    on_exit(fn -> Lab.stop(lab) end)
    lab
  end

  defp form(lab, prune_on, opts \\ []) do
    for i <- @all, do: Lab.start_strategy(lab, i, [prune: i in prune_on] ++ opts)
    assert BeamNode.eventually(fn -> Lab.mesh?(lab, @all) end), "the lab did not form a mesh"
  end

  # Nodedowns seen on `steady` from `since` to `until` (ms) between two
  # nodes of `steady`.
  defp collateral(lab, steady, since, until \\ :infinity) do
    steady_nodes = Enum.map(steady, &Lab.node_of/1)

    for i <- steady,
        {ms, :nodedown, node, reason} <- Lab.node_events(lab, i, since),
        node in steady_nodes and ms < until,
        do: {i, node, reason}
  end

  # Every node event and recorded log line of `hosts` since `since`, in time
  # order: what a failed collateral check shows.
  defp timeline(lab, hosts, since) do
    events =
      for i <- hosts, {ms, kind, node, reason} <- Lab.node_events(lab, i, since) do
        {ms, i, "#{kind} #{node} #{inspect(reason)}"}
      end

    logs = for i <- hosts, {ms, text} <- Lab.logs(lab, i, since), do: {ms, i, text}

    (events ++ logs)
    |> Enum.sort()
    |> Enum.map_join("\n", fn {ms, i, text} -> "+#{ms - since} ms, host #{i}: #{text}" end)
  end

  defp prune_logs(lab, hosts, since) do
    for i <- hosts,
        {_ms, text} <- Lab.logs(lab, i, since),
        text =~ ~r/asked .* to leave|left the cluster|keeping it out|did not leave/,
        do: {i, text}
  end

  defp await_mesh(lab, what) do
    t0 = Lab.now()
    assert BeamNode.eventually(fn -> Lab.mesh?(lab, @all) end, 60_000), "no mesh after #{what}"
    Lab.now() - t0
  end

  describe "a node DNS no longer lists" do
    test "prune on every node: only its own links go down, it stays out, and comes back" do
      removal(prune_on: @all, departed: 5)
    end

    test "prune on some nodes (not on the departed one): the same" do
      removal(prune_on: [1, 2, 3], departed: 5)
    end
  end

  defp removal(prune_on: prune_on, departed: d) do
    lab = lab()
    form(lab, prune_on)
    members = @all -- [d]
    dnode = Lab.node_of(d)
    since = Lab.now()
    Lab.set_listed(lab, members)

    assert BeamNode.eventually(fn -> Lab.connected(lab, d) == [] end),
           "#{dnode} is still connected to #{inspect(Lab.connected(lab, d))}"

    # Still out 30 s later: no member saw it come back, nor lost a peer.
    Process.sleep(30_000)
    assert Lab.connected(lab, d) == []
    assert Lab.mesh?(lab, members)

    downs = Lab.nodedowns(lab, members, since)
    assert collateral(lab, members, since) == [], inspect(prune_logs(lab, @all, since))

    assert Enum.sort(for {i, node, _} <- downs, do: {i, node}) ==
             for(i <- members, do: {i, dnode})

    for i <- members,
        do:
          refute(
            Enum.any?(Lab.node_events(lab, i, since), &match?({_, :nodeup, ^dnode, _}, &1)),
            timeline(lab, @all, since)
          )

    # The departed node said why it is out.
    assert Enum.any?(Lab.logs(lab, d, since), fn {_, text} ->
             text =~ "asked this node to leave"
           end)

    # It dials a member itself (an operator, an old node): the members
    # refuse it again, still without collateral. Host 4 has prune off in
    # the "some" case: global then connects it to the others, who refuse it.
    redial = Lab.now()
    assert Lab.call(lab, d, :net_kernel, :connect_node, [Lab.node_of(4)])

    assert BeamNode.eventually(fn -> Lab.connected(lab, d) == [] end),
           "#{dnode} dialed back in and stayed: #{inspect(Lab.connected(lab, d))}"

    assert collateral(lab, members, since) == [], inspect(prune_logs(lab, @all, since))
    assert Lab.mesh?(lab, members)
    assert Enum.any?(Lab.nodedowns(lab, members, redial), &match?({_, ^dnode, _}, &1))

    # DNS lists it again: back.
    Lab.set_listed(lab, @all)
    back_ms = await_mesh(lab, "DNS listed #{dnode} again")

    IO.puts(
      "lab: removal, prune on #{inspect(prune_on)}: #{length(downs)} nodedowns on the members " <>
        "(#{length(collateral(lab, members, since))} collateral), out 30 s, back in #{back_ms} ms " <>
        "(poll 1000 ms)"
    )
  end

  test "a flapping record (removed/added every 2 s for 60 s) breaks no link between steadily listed nodes" do
    lab = lab()
    form(lab, @all)
    steady = [1, 2, 3, 4]
    since = Lab.now()

    for round <- 1..30 do
      Lab.set_listed(lab, if(rem(round, 2) == 1, do: steady, else: @all))
      Process.sleep(2_000)
    end

    Lab.set_listed(lab, @all)
    back_ms = await_mesh(lab, "the flapping ended")
    assert collateral(lab, steady, since) == []
    flaps = lab |> Lab.nodedowns(steady, since) |> length()

    IO.puts(
      "lab: flapping record 60 s: 0 nodedowns between steady nodes, #{flaps} of the flapping " <>
        "node, mesh #{back_ms} ms after"
    )
  end

  test "DNS down 30 s: nothing pruned, nothing disconnected" do
    lab = lab()
    form(lab, @all)
    since = Lab.now()
    Lab.set_dns_mode(lab, :silent)
    Process.sleep(30_000)
    assert Lab.mesh?(lab, @all)
    Lab.set_dns_mode(lab, :normal)
    Process.sleep(3_000)

    assert Lab.mesh?(lab, @all)
    assert Lab.nodedowns(lab, @all, since) == []
    assert prune_logs(lab, @all, since) == []
    # The failures were seen (and said once per node), so DNS really was down.
    assert Enum.all?(@all, fn i ->
             Enum.any?(Lab.logs(lab, i, since), &(elem(&1, 1) =~ "failed"))
           end)

    IO.puts("lab: DNS down 30 s: 0 nodedowns, 0 prunes")
  end

  test "an 80 s partition: no prune, the mesh heals after" do
    lab = lab()
    form(lab, @all)
    since = Lab.now()
    Lab.partition(lab, [1, 2], [3, 4, 5])

    # Each side sees the other go down (net_ticktime), then waits.
    assert BeamNode.eventually(fn -> Lab.connected(lab, 1) == [Lab.node_of(2)] end, 30_000)
    Process.sleep(80_000 - (Lab.now() - since))
    healed = Lab.now()
    Lab.heal(lab)
    heal_ms = await_mesh(lab, "the partition healed")

    assert prune_logs(lab, @all, since) == []

    # While partitioned, nothing went down within a side: a side hears only
    # its own members, who report lost links across.
    assert collateral(lab, [1, 2], since, healed) == [], timeline(lab, @all, since)
    assert collateral(lab, [3, 4, 5], since, healed) == [], timeline(lab, @all, since)

    # On reconnection, a link across that comes up and drops again makes
    # OTP's global (prevent_overlapping_partitions) drop links inside a
    # side for a moment; with prune off and DNS unchanged Caravan
    # disconnects nothing, so each such nodedown must be global's, and the
    # mesh forms again (above).
    after_heal = collateral(lab, [1, 2], healed) ++ collateral(lab, [3, 4, 5], healed)

    for {i, node, _reason} <- after_heal,
        do: assert(by_global?(lab, i, node, healed), timeline(lab, @all, since))

    IO.puts(
      "lab: 80 s partition {1,2}|{3,4,5}: 0 prunes, 0 nodedowns within a side while " <>
        "partitioned, #{length(after_heal)} after it ended (global), mesh #{heal_ms} ms after it ended"
    )
  end

  # True when host `i`'s link to `node` went down by global's
  # prevent_overlapping_partitions: one end logged it, naming the other.
  defp by_global?(lab, i, node, since) do
    j = Enum.find(@all, &(Lab.node_of(&1) == node))

    Enum.any?([{i, node}, {j, Lab.node_of(i)}], fn {host, other} ->
      Enum.any?(Lab.logs(lab, host, since), fn {_ms, text} ->
        text =~ "in order to prevent overlapping partitions" and text =~ "'#{other}'"
      end)
    end)
  end

  test "a frozen node (SIGSTOP past net_ticktime): no prune, only its links go down while frozen, the mesh heals" do
    lab = lab()
    form(lab, @all)
    since = Lab.now()
    Lab.freeze(lab, 3)

    others = @all -- [3]

    assert BeamNode.eventually(
             fn -> Enum.all?(others, &(Lab.node_of(3) not in Lab.connected(lab, &1))) end,
             30_000
           )

    Process.sleep(2_000)
    assert Lab.mesh?(lab, others)
    thawed = Lab.now()
    Lab.thaw(lab, 3)
    heal_ms = await_mesh(lab, "the node thawed")

    assert prune_logs(lab, @all, since) == []
    # While it was frozen, the others lost only their links to it.
    assert collateral(lab, others, since, thawed) == []

    # On thaw, the frozen node reports the connections it lost, and OTP's
    # global (prevent_overlapping_partitions) makes the others drop each
    # other for a moment: a figure, not Caravan's doing.
    after_thaw = length(collateral(lab, others, thawed))

    IO.puts(
      "lab: node frozen past net_ticktime: 0 prunes, 0 collateral while frozen, " <>
        "#{after_thaw} between the others after SIGCONT (global), mesh #{heal_ms} ms after SIGCONT"
    )
  end
end
