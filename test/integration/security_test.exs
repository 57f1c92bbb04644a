defmodule Caravan.SecurityTest do
  # Security properties of epmd-less clusters, on real nodes with Caravan's
  # flags: nothing ever listens on 4369, a node with the wrong cookie is
  # refused, and TLS distribution refuses a certificate the peer does not
  # trust (and a peer without TLS).
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.{BeamNode, Dnsmasq, Loopback, Listeners, TlsCerts}

  @moduletag :slow
  @moduletag timeout: 180_000

  @cookie_hosts [
    {"sec1.node.dc1.consul", {127, 0, 3, 31}},
    {"sec2.node.dc1.consul", {127, 0, 3, 32}},
    {"sec3.node.dc1.consul", {127, 0, 3, 33}}
  ]
  @tls_hosts [
    {"tls1.sec.dc1.consul", {127, 0, 3, 41}},
    {"tls2.sec.dc1.consul", {127, 0, 3, 42}},
    {"rogue.sec.dc1.consul", {127, 0, 3, 43}},
    {"plain.sec.dc1.consul", {127, 0, 3, 44}}
  ]

  setup_all do
    # Fails the module if anything listens on 4369 at any moment of it.
    Listeners.guard(4369)
    tmp = Path.join(System.tmp_dir!(), "caravan_security_#{System.unique_integer([:positive])}")
    File.mkdir_p!(tmp)
    on_exit(fn -> File.rm_rf!(tmp) end)

    dns =
      Dnsmasq.start(
        listen: Loopback.address(),
        port: 8744,
        srv: for({host, _} <- @cookie_hosts, do: {"_sec._tcp.service.consul", host, 4930}),
        hosts:
          for({host, ip} <- @cookie_hosts ++ @tls_hosts, do: {host, to_string(:inet.ntoa(ip))})
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)
    %{tmp: tmp, dns: dns, inetrc: Dnsmasq.inetrc(dns, Path.join(tmp, "inetrc"))}
  end

  test "nothing listens on 4369 while nodes boot, connect and stop", ctx do
    # The check itself sees a listener when there is one (on another port,
    # so that no other test ever sees anything on 4369).
    control = Listeners.watch(4939)
    {:ok, socket} = :gen_tcp.listen(4939, ip: {127, 0, 3, 39}, reuseaddr: true)
    assert BeamNode.eventually(fn -> Listeners.seen(control) != [] end)
    :gen_tcp.close(socket)
    assert {_, ["2703007F:134B"]} = Listeners.stop(control)

    watch = Listeners.watch(4369)
    [{host1, ip1}, {host2, ip2} | _] = @cookie_hosts
    {peer1, node1} = BeamNode.start("app-4930", host1, ip1, inetrc: ctx.inetrc)
    on_exit(fn -> BeamNode.stop(peer1) end)
    {peer2, node2} = BeamNode.start("app-4930", host2, ip2, inetrc: ctx.inetrc)
    on_exit(fn -> BeamNode.stop(peer2) end)
    assert BeamNode.call(peer1, :net_kernel, :connect_node, [node2])
    assert BeamNode.call(peer2, Node, :list, []) == [node1]

    for ip <- [{127, 0, 0, 1}, ip1, ip2, {0, 0, 0, 0, 0, 0, 0, 1}],
        do: refute(BeamNode.listening?(ip, 4369), "#{:inet.ntoa(ip)}:4369 accepts connections")

    BeamNode.stop(peer1)
    BeamNode.stop(peer2)
    {samples, seen} = Listeners.stop(watch)
    assert seen == []
    assert samples > 1
  end

  test "a node with the wrong cookie is refused; the right cookie is the only difference",
       ctx do
    # All three run the strategy on the same SRV records; sec3 has another
    # cookie.
    nodes =
      for {{host, ip}, i} <- Enum.with_index(@cookie_hosts) do
        cookie = if i == 2, do: "not_the_cluster_cookie", else: "caravan_test_cookie"
        {peer, node} = BeamNode.start("app-4930", host, ip, inetrc: ctx.inetrc, cookie: cookie)
        on_exit(fn -> BeamNode.stop(peer) end)
        {peer, node}
      end

    for {peer, _} <- nodes do
      assert {:ok, _} =
               BeamNode.start_strategy(peer,
                 query: "_sec._tcp.service.consul",
                 node_sname: "app",
                 nameservers: [Dnsmasq.nameserver(ctx.dns)],
                 poll_interval: 300
               )
    end

    [{peer1, node1}, {peer2, node2}, {peer3, node3}] = nodes
    assert BeamNode.eventually(fn -> node2 in BeamNode.call(peer1, Node, :list, []) end)

    # Explicit attempts both ways are refused, and nobody lists anybody
    # across the cookie line, not even as a hidden node.
    refute BeamNode.call(peer3, :net_kernel, :connect_node, [node1])
    refute BeamNode.call(peer1, :net_kernel, :connect_node, [node3])
    refute BeamNode.call(peer2, :net_kernel, :connect_node, [node3])
    assert BeamNode.call(peer3, :erlang, :nodes, [:connected]) == []

    for {peer, _} <- [{peer1, node1}, {peer2, node2}],
        do: refute(node3 in BeamNode.call(peer, :erlang, :nodes, [:connected]))

    # With the cluster's cookie (and nothing else changed) sec3 joins: the
    # refusal above was the cookie's doing.
    true = BeamNode.call(peer3, :erlang, :set_cookie, [:caravan_test_cookie])
    assert BeamNode.eventually(fn -> BeamNode.full_mesh?(nodes) end)
  end

  test "TLS distribution refuses an untrusted certificate and a peer without TLS", ctx do
    [{tls1, ip1}, {tls2, ip2}, {rogue, rogue_ip}, {plain, plain_ip}] = @tls_hosts
    dir = Path.join(ctx.tmp, "tls")
    cluster = TlsCerts.write(dir, "cluster", [tls1, tls2])
    # The rogue's certificate comes from another authority. It trusts the
    # cluster's authority, so any refusal is the cluster nodes' doing.
    other = TlsCerts.write(dir, "rogue", [rogue], trust: [cluster.ca])

    start = fn host, ip, args ->
      {peer, node} = BeamNode.start("app-4940", host, ip, inetrc: ctx.inetrc, args: args)
      on_exit(fn -> BeamNode.stop(peer) end)
      {peer, node}
    end

    {peer1, node1} = start.(tls1, ip1, TlsCerts.erl_args(cluster.optfile))
    {peer2, node2} = start.(tls2, ip2, TlsCerts.erl_args(cluster.optfile))
    {rogue_peer, rogue_node} = start.(rogue, rogue_ip, TlsCerts.erl_args(other.optfile))
    # The plain node's handshake with a TLS listener gets no answer: it
    # gives up after net_setuptime (7 s by default, 2 s here).
    {plain_peer, plain_node} = start.(plain, plain_ip, ["-kernel", "net_setuptime", "2"])

    # The trusted pair connects over TLS.
    assert BeamNode.call(peer1, :net_kernel, :connect_node, [node2])
    {:ok, [{^node2, info}]} = BeamNode.call(peer1, :net_kernel, :nodes_info, [])
    assert {:net_address, _, _, :tls, :inet} = info[:address]

    # The rogue is refused in both directions, and so is a plain TCP node.
    refute BeamNode.call(rogue_peer, :net_kernel, :connect_node, [node1])
    refute BeamNode.call(peer2, :net_kernel, :connect_node, [rogue_node])
    refute BeamNode.call(plain_peer, :net_kernel, :connect_node, [node1])
    refute BeamNode.call(peer1, :net_kernel, :connect_node, [plain_node])

    assert BeamNode.call(rogue_peer, :erlang, :nodes, [:connected]) == []
    assert BeamNode.call(plain_peer, :erlang, :nodes, [:connected]) == []
    assert BeamNode.call(peer1, :erlang, :nodes, [:connected]) == [node2]
    assert BeamNode.call(peer2, :erlang, :nodes, [:connected]) == [node1]
  end
end
