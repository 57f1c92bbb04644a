defmodule Caravan.Cluster.StrategyDiagnosticsTest do
  # The strategy says why a cluster does not form: on real nodes (Caravan's
  # epmd flags, no epmd) against a real dnsmasq, each mistake is injected
  # and the warning a person sees (Logger at :warning) is asserted to name
  # the cause and the fix, once per streak; Caravan.diagnose/1 shows the
  # running topologies' last poll.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.{BeamNode, BrokenCluster, LevelLog}

  @moduletag timeout: 180_000

  setup_all do
    BrokenCluster.start(
      other_cookie: "other_cookie_77",
      on_node: fn {peer, _} -> :ok = BeamNode.call(peer, LevelLog, :start, []) end
    )
  end

  defp strategy({peer, _node}, topology, query, ns, more \\ []) do
    opts =
      [
        topology: topology,
        query: query,
        node_sname: "app",
        nameservers: [ns],
        poll_interval: 200,
        connect_timeout: 2_000
      ]
      |> Keyword.merge(more)

    BeamNode.call(peer, LevelLog, :start_strategy, [opts])
  end

  defp warnings({peer, _}, text), do: BeamNode.call(peer, LevelLog, :matching, [:warning, text])
  defp debugs({peer, _}, text), do: BeamNode.call(peer, LevelLog, :matching, [:debug, text])

  defp eventually_warned(node, text) do
    assert BeamNode.eventually(fn -> warnings(node, text) != [] end, 20_000),
           "no warning with #{inspect(text)}; lines: #{inspect(BeamNode.call(elem(node, 0), LevelLog, :lines, []))}"

    warnings(node, text)
  end

  test "failed connects say why at warning, once per node while they stay unreachable",
       %{n1: n1, ns: ns} do
    {:ok, _} = strategy(n1, :broken, "_broken._tcp.service.consul", ns)

    eventually_warned(
      n1,
      "[caravan] topology broken: cannot connect to app-4370@web3.node.dc1.consul: nothing " <>
        "listens on 127.0.0.4:4370 (connection refused): app-4370@web3.node.dc1.consul is " <>
        "not running, or listens on another address or port"
    )

    eventually_warned(
      n1,
      "[caravan] topology broken: cannot connect to app-4370@web4.node.dc1.consul: host " <>
        "web4.node.dc1.consul does not resolve (:nxdomain); asked #{ns} (from CARAVAN_NAMESERVERS)"
    )

    eventually_warned(
      n1,
      "[caravan] topology broken: cannot connect to app-4370@web5.node.dc1.consul: " <>
        "127.0.0.6:4370 accepts TCP but app-4370@web5.node.dc1.consul is not connected: if a " <>
        "connect was tried, the distribution handshake failed: a different cookie"
    )

    # Many more failed connects later (10 polls), still one warning each, the
    # rest not logged.
    Process.sleep(2_000)
    assert debugs(n1, "topology broken: cannot connect to app-4370@web3.node.dc1.consul") == []

    for host <- ["web3", "web4", "web5"] do
      assert [_] = warnings(n1, "topology broken: cannot connect to app-4370@#{host}.node")
    end
  end

  test "a peer behind a firewall that drops packets: the connect timed out, and why",
       %{n1: n1, ns: ns} do
    {:ok, _} = strategy(n1, :fw, "_fw._tcp.service.consul", ns, connect_timeout: 1_000)

    eventually_warned(
      n1,
      "[caravan] topology fw: cannot connect to app-4370@web6.node.dc1.consul: no answer " <>
        "within connect_timeout; no answer from 127.0.0.7:4370 (TCP connect timed out): a " <>
        "firewall drops the packets, or the host is down"
    )
  end

  test "a node that stays unreachable is reported again, at the bounded rate", %{n1: n1, ns: ns} do
    {:ok, _} = strategy(n1, :dead, "_dead._tcp.service.consul", ns, report_interval: 1_000)
    text = "topology dead: cannot connect to app-4370@web3.node.dc1.consul: nothing listens"
    assert BeamNode.eventually(fn -> length(warnings(n1, text)) >= 2 end, 30_000)
    assert hd(warnings(n1, text)) =~ "reported again every 1 s while DNS lists it"
    # Between two reports, failed connects are not logged.
    assert debugs(n1, "topology dead: cannot connect to app-4370@web3.node.dc1.consul") == []
  end

  test "a query DNS does not know (NXDOMAIN) warns once per streak, naming query and nameservers",
       %{n1: n1, ns: ns} do
    {:ok, _pid} = strategy(n1, :typo, "_ap._tcp.service.consul", ns)

    [warning] =
      eventually_warned(
        n1,
        "[caravan] topology typo: DNS has listed no instances for 3 polls: " <>
          ~s["_ap._tcp.service.consul" (nameservers: #{ns}) answers NXDOMAIN/NODATA or no ] <>
          "records; this node runs alone. Check the query"
      )

    assert warning =~ "Caravan.diagnose() tells more"

    # Many polls later (10, at 200 ms): still one warning.
    Process.sleep(2_000)

    assert [_] = warnings(n1, "topology typo: DNS has listed no instances")

    # Caravan.diagnose/1 finds the running strategy and its last poll.
    report = BeamNode.call(elem(n1, 0), Caravan, :diagnose, [[print: false]])
    assert report =~ ~r/Topology typo: running \(#PID<[\d.]+>\)/
    assert report =~ ~r/last poll:      \d+ ms ago: 0 node\(s\)/
  end

  test "DNS listing only this node warns once", %{n1: n1, ns: ns} do
    {:ok, _} = strategy(n1, :solo, "_solo._tcp.service.consul", ns)

    eventually_warned(
      n1,
      "[caravan] topology solo: DNS has listed only this node (app-4370@web1.node.dc1.consul) " <>
        ~s[for 3 polls: "_solo._tcp.service.consul" (nameservers: #{ns}); the other instances]
    )
  end

  test "a misspelt config key is refused, naming the nearest known key", %{n1: n1, ns: ns} do
    assert {:error, reason} =
             strategy(n1, :misspelt, "_solo._tcp.service.consul", ns, pol_interval: 1000)

    assert {:shutdown, {:failed_to_start_child, :misspelt, {:invalid_config, message}}} = reason
    assert message =~ "unknown key :pol_interval; did you mean :poll_interval?"

    assert [_] =
             BeamNode.call(elem(n1, 0), LevelLog, :matching, [
               :error,
               "not started: unknown key :pol_interval; did you mean :poll_interval?"
             ])
  end

  test "with no nameservers, a .consul peer does not resolve, and the warning says to set them",
       %{bare: bare, ns: ns} do
    {:ok, _} = strategy(bare, :bare, "_solo._tcp.service.consul", ns)

    eventually_warned(
      bare,
      "[caravan] topology bare: cannot connect to app-4370@web1.node.dc1.consul: host " <>
        "web1.node.dc1.consul does not resolve"
    )

    assert [warning] = warnings(bare, "topology bare: cannot connect")

    assert warning =~
             "no -caravan_nameservers / CARAVAN_NAMESERVERS is configured, so the OS resolver " <>
               "was asked; for .consul names set CARAVAN_NAMESERVERS=<consul-ip>:8600"
  end

  test "a node_sname that does not match this node's name is told at start", %{n1: n1, ns: ns} do
    {:ok, _} = strategy(n1, :sname, "_solo._tcp.service.consul", ns, node_sname: "web")

    eventually_warned(
      n1,
      "[caravan] topology sname: this node is app-4370@web1.node.dc1.consul, but peers dial " <>
        ~s[web-4370@web1.node.dc1.consul (node_sname "web"): make the name part of the node ] <>
        "name and the topology's :node_sname agree"
    )
  end

  test "a node named without a port is told at start that peers dial <sname>-<port>@host",
       %{n7: n7, ns: ns} do
    {:ok, _} = strategy(n7, :noport, "_noport._tcp.service.consul", ns)

    eventually_warned(
      n7,
      "[caravan] topology noport: this node is app@web7.node.dc1.consul, a name without a " <>
        "port: it listens on 4370, but peers dial app-4370@web7.node.dc1.consul; name it " <>
        "app-4370@web7.node.dc1.consul"
    )

    # It dials the name DNS gives, reaches its own address (OTP logs
    # "Cannot get connection id"), and the warning says why.
    eventually_warned(
      n7,
      "[caravan] topology noport: cannot connect to app-4370@web7.node.dc1.consul: no answer " <>
        "within connect_timeout; web7.node.dc1.consul resolves to 127.0.0.8:4370, this node's " <>
        "own address and port (this node is app@web7.node.dc1.consul): either this node's " <>
        "name is not the one peers dial (app-4370@web7.node.dc1.consul), or several nodes " <>
        "share one address; give each its own with -kernel inet_dist_use_interface"
    )
  end
end
