defmodule Caravan.Integration.FirstHourTest do
  # What a newcomer meets in the first hour, on real nodes (Caravan's epmd
  # flags, no epmd) against a real dnsmasq: one nameserver setting
  # (CARAVAN_NAMESERVERS) for host lookups and discovery, quiet logs at a
  # fresh app's Logger level (:debug), warnings that are right, release
  # helper nodes and boot hints that explain.
  use ExUnit.Case, async: false

  alias Caravan.Test.{BeamNode, Dnsmasq, LevelLog}

  @moduletag :integration
  @moduletag timeout: 180_000

  setup_all do
    hosts = for n <- 1..5, do: {"web#{n}.node.dc26.consul", "127.0.26.#{n}"}

    srv =
      for(n <- 1..3, do: {"_shop._tcp.service.consul", "web#{n}.node.dc26.consul", 4370}) ++
        [
          # web1's record carries a port its node name does not have.
          {"_pm._tcp.service.consul", "web1.node.dc26.consul", 4371},
          {"_pm._tcp.service.consul", "web2.node.dc26.consul", 4370},
          # web5 starts later, with another cookie.
          {"_ck._tcp.service.consul", "web5.node.dc26.consul", 4370}
        ]

    dns = Dnsmasq.start(port: 8600, srv: srv, hosts: hosts)
    on_exit(fn -> Dnsmasq.stop(dns) end)
    ns = Dnsmasq.nameserver(dns)

    nodes =
      for n <- 1..3 do
        {peer, node} =
          BeamNode.start("app-4370", "web#{n}.node.dc26.consul", {127, 0, 26, n},
            env: [{"CARAVAN_NAMESERVERS", ns}]
          )

        on_exit(fn -> BeamNode.stop(peer) end)
        # Records every [caravan] line; the primary level is :debug, a fresh app's.
        :ok = BeamNode.call(peer, LevelLog, :start, [])
        {peer, node}
      end

    %{ns: ns, nodes: nodes}
  end

  defp strategy({peer, _node}, topology, query, more) do
    opts =
      [topology: topology, query: query, node_sname: "app", poll_interval: 200]
      |> Keyword.merge(more)

    {:ok, _} = BeamNode.call(peer, LevelLog, :start_strategy, [opts])
  end

  defp lines({peer, _}), do: BeamNode.call(peer, LevelLog, :lines, [])
  defp warnings({peer, _}, text), do: BeamNode.call(peer, LevelLog, :matching, [:warning, text])
  defp connected({peer, _}), do: BeamNode.call(peer, Node, :list, [])

  test "a topology with no nameservers finds its peers through CARAVAN_NAMESERVERS alone, " <>
         "and a formed cluster's polls log nothing",
       %{nodes: [{_, node1}, {_, node2}, n3]} do
    strategy(n3, :shop, "_shop._tcp.service.consul", [])

    assert BeamNode.eventually(fn -> Enum.sort(connected(n3)) == [node1, node2] end, 20_000),
           "not connected: #{inspect(lines(n3))}"

    # Steady state: about 10 polls later, not one more line.
    Process.sleep(500)
    before = lines(n3)
    Process.sleep(2_000)
    assert lines(n3) -- before == []
    # The lookups were not traced at the :debug level either.
    refute Enum.any?(lines(n3), fn {_, line} -> line =~ "trace:" end)

    report = BeamNode.call(elem(n3, 0), Caravan, :diagnose, [[print: false]])
    assert report =~ "(from CARAVAN_NAMESERVERS)"
  end

  test "a misspelt query on a connected node does not say it runs alone",
       %{nodes: [_n1, n2, {_, node3}], ns: ns} do
    true = BeamNode.call(elem(n2, 0), Node, :connect, [node3])
    strategy(n2, :typo, "_shpo._tcp.service.consul", nameservers: [ns])
    text = "topology typo: DNS has listed no instances for 3 polls"
    assert BeamNode.eventually(fn -> warnings(n2, text) != [] end, 20_000)
    [warning] = warnings(n2, text)
    refute warning =~ "runs alone"
    assert warning =~ ~r/this node keeps its \d connection\(s\) but finds no new peers/
  end

  test "an SRV port that does not match the node's name is warned of once, on that node",
       %{nodes: [n1, n2, _n3], ns: ns} do
    strategy(n1, :pm, "_pm._tcp.service.consul", nameservers: [ns])
    strategy(n2, :pm, "_pm._tcp.service.consul", nameservers: [ns])

    text =
      "topology pm: DNS lists app-4371@web1.node.dc26.consul on this node's host, port 4371, " <>
        "but this node is app-4370@web1.node.dc26.consul and listens on 4370"

    assert BeamNode.eventually(fn -> warnings(n1, text) != [] end, 20_000)
    # Many polls later: still one warning, and none on the node DNS lists right.
    Process.sleep(2_000)
    assert [_] = warnings(n1, text)
    assert warnings(n2, "on this node's host") == []
  end

  test "a cookie mismatch's explanation replaces the stale one at the next failure",
       %{nodes: [_n1, n2, _n3], ns: ns} do
    strategy(n2, :ck, "_ck._tcp.service.consul", nameservers: [ns])
    stale = "topology ck: cannot connect to app-4370@web5.node.dc26.consul: nothing listens"
    assert BeamNode.eventually(fn -> warnings(n2, stale) != [] end, 20_000)

    {peer, _} =
      BeamNode.start("app-4370", "web5.node.dc26.consul", {127, 0, 26, 5},
        env: [{"CARAVAN_NAMESERVERS", ns}],
        cookie: "another_cookie_26"
      )

    on_exit(fn -> BeamNode.stop(peer) end)

    cookie =
      "topology ck: cannot connect to app-4370@web5.node.dc26.consul: 127.0.26.5:4370 accepts TCP"

    # Well within report_interval (300 s): the next failure says what changed.
    assert BeamNode.eventually(fn -> warnings(n2, cookie) != [] end, 20_000)
    assert hd(warnings(n2, cookie)) =~ "a different cookie"
    Process.sleep(1_000)
    assert [_] = warnings(n2, cookie)
    assert [_] = warnings(n2, stale)
  end

  describe "a release helper node (bin/app rpc) that cannot reach its node" do
    # The helper's epmd module is the node's; `erl` here does what the
    # release script's helper does: connect to the node, then report.
    defp helper(target, nameservers) do
      System.cmd(
        "erl",
        ["-noshell", "-name", "rpc-1a2b-app-4370@127.0.26.9"] ++
          BeamNode.erl_args({127, 0, 26, 9}) ++
          ["-eval", "io:format(\"~p~n\", [net_kernel:connect_node('#{target}')]), halt()."],
        stderr_to_stdout: true,
        env: [{"CARAVAN_NAMESERVERS", nameservers}]
      )
    end

    test "with CARAVAN_NAMESERVERS at a closed port, it names that nameserver and its answer" do
      {out, 0} = helper("app-4370@web1.node.dc26.consul", "127.0.0.1:1")

      assert out =~
               "[caravan] cannot reach node app-4370@web1.node.dc26.consul: host " <>
                 "web1.node.dc26.consul does not resolve: the nameservers from " <>
                 "CARAVAN_NAMESERVERS (127.0.0.1:1) answered"

      assert out =~ "Check CARAVAN_NAMESERVERS in this shell"
      assert out =~ "false"
      # Said once, though OTP asks for the address more than once.
      assert length(String.split(out, "[caravan]")) == 2
    end

    test "when nothing listens at the node's address, it says so", %{ns: ns} do
      {out, 0} = helper("app-4370@web4.node.dc26.consul", ns)

      assert out =~
               "[caravan] cannot reach node app-4370@web4.node.dc26.consul: nothing accepts " <>
                 "TCP on 127.0.26.4:4370 (econnrefused)"
    end

    test "a reachable node gets no line", %{nodes: [{_, node1} | _], ns: ns} do
      {out, 0} = helper(node1, ns)
      assert out =~ "true"
      refute out =~ "[caravan]"
    end
  end

  test "a quoted inet_dist_use_interface (as in ELIXIR_ERL_OPTIONS) is named as malformed" do
    # Split on spaces with no quote handling, the value reaches OTP as the
    # atom '{127,0,26,8}'.
    {out, status} =
      System.cmd(
        "erl",
        ["-noshell", "-name", "app-4936@127.0.26.8"] ++
          BeamNode.erl_args({127, 0, 26, 8}) ++
          ["-kernel", "inet_dist_use_interface", "'{127,0,26,8}'"] ++
          ["-eval", "io:format(\"booted~n\"), halt()."],
        stderr_to_stdout: true
      )

    assert status != 0
    refute out =~ "booted"

    assert out =~
             "[caravan] cannot listen: -kernel inet_dist_use_interface is malformed: " <>
               ~s(:"{127,0,26,8}" is not an IP address tuple)

    assert out =~ "in vm.args -kernel inet_dist_use_interface '{127,0,26,8}'"

    assert out =~
             "in ELIXIR_ERL_OPTIONS, ERL_FLAGS or ERL_AFLAGS -kernel inet_dist_use_interface {127,0,26,8} (no quotes"
  end
end
