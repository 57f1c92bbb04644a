defmodule Caravan.MembershipTest do
  # Real nodes (:peer OS processes on 127.0.4.41-53, no epmd) cluster from
  # a real dnsmasq on port 8772 of a loopback address from
  # Caravan.Test.Loopback, whose records change while they run (dnsmasq
  # changes records only by restart, which is also how these tests make the
  # nameserver die and come back). The nodes keep their fixed addresses:
  # the .addr. targets below encode them. Not async: the nodes listen on
  # fixed distribution ports.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.{BeamNode, Dnsmasq, Loopback}

  @moduletag timeout: 180_000
  @dns_port 8772
  @query "_app._tcp.service.consul"

  # An inetrc that turns every OS lookup off (no hosts file, no resolv.conf,
  # lookup only in the empty hosts table). It keeps test traffic away from
  # the machine's resolver, and it means a peer's host name can only be
  # resolved by Caravan's own resolver: these nodes need no inetrc to work.
  defp no_os_lookups(dir) do
    path = Path.join(dir, "no_os_lookups.inetrc")
    File.write!(path, ~s({resolv_conf, ""}.\n{hosts_file, ""}.\n{lookup, [file]}.\n))
    path
  end

  # This test's dnsmasq address, the same across its restarts.
  defp listen do
    with nil <- Process.get(:listen), do: tap(Loopback.address(), &Process.put(:listen, &1))
  end

  defp ns, do: "#{listen()}:#{@dns_port}"

  defp dnsmasq(srv, hosts \\ []) do
    dns = Dnsmasq.start(listen: listen(), port: @dns_port, srv: srv, hosts: hosts)
    on_exit(fn -> Dnsmasq.stop(dns) end)
    dns
  end

  defp node(name, host, ip, opts) do
    {peer, node} = BeamNode.start(name, host, ip, opts)
    on_exit(fn -> BeamNode.stop(peer) end)
    {peer, node}
  end

  defp nodes(peer), do: peer |> BeamNode.call(Node, :list, []) |> Enum.sort()

  defp strategy(peer, opts) do
    base = [
      query: @query,
      node_sname: "app",
      nameservers: [ns()],
      timeout: 250,
      poll_interval: 300
    ]

    {:ok, sup} = BeamNode.start_strategy(peer, Keyword.merge(base, opts))
    sup
  end

  @tag :tmp_dir
  test "Consul names connect through -caravan_nameservers / CARAVAN_NAMESERVERS, .addr. targets through their IP",
       %{tmp_dir: dir} do
    dnsmasq(
      [
        # A Nomad job: Consul answers the .addr. form; the node is named after its IP.
        {@query, "7f000429.addr.dc1.consul", 5041},
        {@query, "web2.node.dc1.consul", 5042}
      ],
      [{"web2.node.dc1.consul", "127.0.4.42"}]
    )

    inetrc = no_os_lookups(dir)

    {p1, n1} =
      node("app-5041", "127.0.4.41", {127, 0, 4, 41},
        inetrc: inetrc,
        args: ["-caravan_nameservers", ns()]
      )

    {p2, n2} =
      node("app-5042", "web2.node.dc1.consul", {127, 0, 4, 42},
        inetrc: inetrc,
        env: [{"CARAVAN_NAMESERVERS", ns()}]
      )

    # The control: the same node without Caravan's nameservers cannot
    # resolve web2.node.dc1.consul, so it cannot connect.
    {p3, _n3} = node("app-5043", "127.0.4.43", {127, 0, 4, 43}, inetrc: inetrc)
    refute BeamNode.call(p3, Node, :connect, [n2])

    # Only node 1 runs the strategy, so it is node 1 that must resolve
    # web2.node.dc1.consul (through the vm.args flag) to connect.
    strategy(p1, [])

    assert BeamNode.eventually(fn -> nodes(p1) == [n2] and nodes(p2) == [n1] end),
           "no mesh: #{inspect({nodes(p1), nodes(p2)})}"

    # Node 2 got its nameserver from the environment.
    assert BeamNode.call(p2, Caravan.Epmd.HostResolver, :resolve, [
             ~c"web2.node.dc1.consul",
             :inet
           ]) ==
             {:ok, {127, 0, 4, 42}}

    assert BeamNode.call(p1, :rpc, :call, [n2, :erlang, :node, []]) == n2
  end

  test "nodes join, a node leaves (pruned with prune: true, kept without), the nameserver dies and comes back" do
    a = {"app-5051", "127.0.4.51", {127, 0, 4, 51}, "7f000433.addr.dc1.consul", 5051}
    b = {"app-5052", "127.0.4.52", {127, 0, 4, 52}, "7f000434.addr.dc1.consul", 5052}
    c = {"app-5053", "127.0.4.53", {127, 0, 4, 53}, "7f000435.addr.dc1.consul", 5053}
    srv = fn members -> for {_, _, _, target, port} <- members, do: {@query, target, port} end

    # -connect_all false: global would otherwise connect nodes transitively
    # and undo a prune (documented in DnsStrategy's "Pruning").
    start = fn {name, host, ip, _, _} -> node(name, host, ip, args: ["-connect_all", "false"]) end

    dns = dnsmasq(srv.([a, b]))
    {pa, na} = start.(a)
    {pb, nb} = start.(b)
    for p <- [pa, pb], do: BeamNode.watch_nodedowns(p)
    strategy(pa, prune: true)
    sup_b = strategy(pb, [])
    assert BeamNode.eventually(fn -> nodes(pa) == [nb] end)

    # C joins: it starts, and DNS lists it.
    {pc, nc} = start.(c)
    BeamNode.watch_nodedowns(pc)
    strategy(pc, [])
    Dnsmasq.stop(dns)
    dns = dnsmasq(srv.([a, b, c]))

    assert BeamNode.eventually(fn ->
             nodes(pa) == Enum.sort([nb, nc]) and nodes(pb) == Enum.sort([na, nc])
           end)

    # B leaves DNS (deregistered, its strategy stopped, the VM still up).
    :ok = BeamNode.call(pb, Supervisor, :stop, [sup_b])
    Dnsmasq.stop(dns)
    dns = dnsmasq(srv.([a, c]))

    # A (prune: true) asks B to leave; B's strategy is stopped, so nobody
    # hears it and A disconnects B after leave_after (3) requests; C
    # (prune: false) keeps it (-connect_all false: no global reconnects).
    assert BeamNode.eventually(fn -> nodes(pa) == [nc] end), "A still has #{inspect(nodes(pa))}"
    assert nodes(pc) == Enum.sort([na, nb])
    assert BeamNode.nodedowns(pa) == [nb]

    # The nameserver dies for several polls (300 ms each): nothing changes.
    Dnsmasq.stop(dns)
    Process.sleep(2_000)
    assert nodes(pa) == [nc]
    assert nodes(pc) == Enum.sort([na, nb])

    # It comes back with the same records: still nothing changes.
    dnsmasq(srv.([a, c]))
    Process.sleep(1_000)
    assert nodes(pa) == [nc]
    assert nodes(pc) == Enum.sort([na, nb])
    assert BeamNode.nodedowns(pa) == [nb]
    assert BeamNode.nodedowns(pc) == []
  end
end
