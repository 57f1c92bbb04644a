defmodule Caravan.DiagnoseTest do
  # Caravan.diagnose/1 run on real nodes (separate OS processes, Caravan's
  # epmd flags, no epmd) against a real dnsmasq serving Consul-shaped
  # records: a healthy cluster, and one mistake per topology or node, each
  # with the verdict a person reads.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.{BeamNode, BrokenCluster}

  @moduletag timeout: 180_000

  @cookie "caravan_test_cookie"
  @other_cookie "not_the_cluster_cookie_9f3a"

  setup_all do
    %{ns: ns, n1: n1, n2: n2} =
      cluster = BrokenCluster.start(other_cookie: @other_cookie, web2: true)

    for {peer, _} <- [n1, n2] do
      {:ok, _} =
        BeamNode.start_strategy(peer,
          query: "_app._tcp.service.consul",
          node_sname: "app",
          nameservers: [ns],
          poll_interval: 300
        )
    end

    assert BeamNode.eventually(fn -> BeamNode.full_mesh?([n1, n2]) end)
    cluster
  end

  defp diagnose({peer, _node}, opts \\ []),
    do: BeamNode.call(peer, Caravan, :diagnose, [Keyword.put(opts, :print, false)])

  defp topology(ns, query), do: [query: query, node_sname: "app", nameservers: [ns]]

  test "a healthy cluster: no problems, both nodes resolve, accept TCP and are connected",
       %{n1: n1, ns: ns} do
    report = diagnose(n1)

    assert report =~ "node name:      app-4370@web1.node.dc1.consul"
    assert report =~ "listening on port 4370, 127.0.0.2 (-kernel inet_dist_use_interface)"
    assert report =~ ~r/creation:       \d+/
    assert report =~ "epmd module:    Caravan.Epmd.Client"
    assert report =~ "-start_epmd false -epmd_module Elixir.Caravan.Epmd.Client"
    assert report =~ "nameservers:    #{ns} (from CARAVAN_NAMESERVERS)"
    # The running strategy is found, with its query.
    assert report =~ ~r/Topology caravan: running \(#PID<[\d.]+>\)/
    assert report =~ ~s[lookup now:     "_app._tcp.service.consul": 2 record(s)]
    assert report =~ "app-4370@web1.node.dc1.consul: this node"

    assert report =~
             "app-4370@web2.node.dc1.consul: resolves to 127.0.0.3, port 4370 accepts TCP, connected"

    assert report =~ "Verdict: no problems found."
    refute report =~ @cookie
  end

  test "a broken topology: each unreachable node says why, with the next step",
       %{n1: n1, ns: ns} do
    report = diagnose(n1, topologies: [topology(ns, "_broken._tcp.service.consul")])

    # Listed but nothing runs there.
    assert report =~
             "app-4370@web3.node.dc1.consul: nothing listens on 127.0.0.4:4370 (connection refused)"

    # Listed but no address.
    assert report =~
             "app-4370@web4.node.dc1.consul: host web4.node.dc1.consul does not resolve " <>
               "(:nxdomain); asked #{ns} (from CARAVAN_NAMESERVERS)"

    # Runs, answers, but its cookie differs: the handshake fails.
    assert report =~
             "app-4370@web5.node.dc1.consul: resolves to 127.0.0.6, port 4370 accepts TCP, NOT connected"

    assert report =~
             "127.0.0.6:4370 accepts TCP but app-4370@web5.node.dc1.consul is not connected"

    assert report =~ "a different cookie"
    assert report =~ ~r/Verdict: 3 problem\(s\), next steps:/
    refute report =~ @cookie
    refute report =~ @other_cookie
  end

  test "a query DNS does not know (NXDOMAIN): no instances, naming the query and nameservers",
       %{n1: n1, ns: ns} do
    report = diagnose(n1, topologies: [topology(ns, "_ap._tcp.service.consul")])

    assert report =~ "nodes DNS lists: none"

    assert report =~
             ~s(topology caravan: DNS lists no instances for "_ap._tcp.service.consul" ) <>
               ~s[(asking #{ns}): check the query]
  end

  test "a nameserver that does not answer: the lookup failed, not 'no instances'", %{n1: n1} do
    # Nothing listens on 127.0.0.1:8601.
    report = diagnose(n1, topologies: [topology("127.0.0.1:8601", "_app._tcp.service.consul")])

    assert report =~ ~s(lookup now:     "_app._tcp.service.consul": FAILED: )

    assert report =~
             ~s[topology caravan: lookup of "_app._tcp.service.consul" failed (]

    assert report =~ "asking 127.0.0.1:8601: check :nameservers"
    refute report =~ "DNS lists no instances"
  end

  test "a node_sname that does not match the node names", %{n1: n1, ns: ns} do
    topology = Keyword.put(topology(ns, "_app._tcp.service.consul"), :node_sname, "web")
    report = diagnose(n1, topologies: [topology])

    assert report =~
             "topology caravan: this node is app-4370@web1.node.dc1.consul, but peers dial " <>
               ~s[web-4370@web1.node.dc1.consul (node_sname "web"): make the name part]

    # The names DNS gives with that node_sname: nobody answers to them.
    assert report =~
             "web-4370@web2.node.dc1.consul: resolves to 127.0.0.3, port 4370 accepts TCP, NOT connected"

    assert report =~ "DNS does not list this node (app-4370@web1.node.dc1.consul)"
  end

  test "a peer behind a firewall that drops packets: TCP timed out", %{n1: n1, ns: ns} do
    report = diagnose(n1, topologies: [topology(ns, "_fw._tcp.service.consul")], tcp_timeout: 500)

    assert report =~
             "app-4370@web6.node.dc1.consul: no answer from 127.0.0.7:4370 (TCP connect timed " <>
               "out): a firewall drops the packets, or the host is down"
  end

  test "a misspelt topology key is a problem, naming the nearest key", %{n1: n1, ns: ns} do
    topology = topology(ns, "_app._tcp.service.consul") ++ [pol_interval: 1000]
    report = diagnose(n1, topologies: [topology])

    assert report =~
             "a topology config is invalid (the strategy refuses to start with it): unknown " <>
               "key :pol_interval; did you mean :poll_interval?"
  end

  test "a node named without a port: peers dial <sname>-<port>@host", %{n7: n7, ns: ns} do
    report = diagnose(n7, topologies: [topology(ns, "_noport._tcp.service.consul")])

    assert report =~
             "this node is app@web7.node.dc1.consul, a name without a port: it listens on " <>
               "4370, but peers dial app-4370@web7.node.dc1.consul"

    assert report =~ "DNS does not list this node (app@web7.node.dc1.consul)"
  end

  test "a node without CARAVAN_NAMESERVERS: .consul hosts do not resolve, and it says so",
       %{bare: bare, ns: ns} do
    report = diagnose(bare, topologies: [topology(ns, "_app._tcp.service.consul")])

    assert report =~ "nameservers:    none configured"

    assert report =~
             "app-4370@web2.node.dc1.consul: host web2.node.dc1.consul does not resolve"

    assert report =~
             "no -caravan_nameservers / CARAVAN_NAMESERVERS is configured, so the OS " <>
               "resolver was asked; for .consul names set CARAVAN_NAMESERVERS"
  end
end
