defmodule Caravan.TransportsTest do
  # Distribution transports with Caravan's epmd module, each against real
  # dnsmasq SRV records and real nodes running the strategy:
  # -dist_listen false nodes connect out; TLS distribution (-proto_dist
  # inet_tls, certificates made here) and IPv6 (-proto_dist inet6_tcp on
  # ::1) listen on the port from the node name and form a cluster.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.{BeamNode, Dnsmasq, Loopback, Listeners, TlsCerts}

  @moduletag :slow
  @moduletag timeout: 180_000

  @v6 {0, 0, 0, 0, 0, 0, 0, 1}

  @servers [{"srv1.node.dc1.consul", {127, 0, 3, 11}}, {"srv2.node.dc1.consul", {127, 0, 3, 12}}]
  @clients [{"cli1.node.dc1.consul", {127, 0, 3, 13}}, {"cli2.node.dc1.consul", {127, 0, 3, 14}}]
  @tls [
    {"tls1.node.dc1.consul", {127, 0, 3, 21}},
    {"tls2.node.dc1.consul", {127, 0, 3, 22}},
    {"tls3.node.dc1.consul", {127, 0, 3, 23}}
  ]
  @six [
    {"v6a.node.dc1.consul", 4950},
    {"v6b.node.dc1.consul", 4951},
    {"v6c.node.dc1.consul", 4952}
  ]

  setup_all do
    # Fails the module if anything listens on 4369 at any moment of it.
    Listeners.guard(4369)
    tmp = Path.join(System.tmp_dir!(), "caravan_transports_#{System.unique_integer([:positive])}")
    File.mkdir_p!(tmp)
    on_exit(fn -> File.rm_rf!(tmp) end)
    hosts = @servers ++ @clients ++ @tls

    dns =
      Dnsmasq.start(
        listen: Loopback.address(),
        port: 8740,
        srv:
          for({host, _} <- @servers, do: {"_app._tcp.service.consul", host, 4910}) ++
            for({host, _} <- @tls, do: {"_tls._tcp.service.consul", host, 4920}),
        hosts: for({host, ip} <- hosts, do: {host, ip |> :inet.ntoa() |> to_string()})
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)

    # IPv6 only: dnsmasq on ::1, AAAA records only, so every lookup and
    # every connection of these nodes goes over IPv6.
    dns6 =
      Dnsmasq.start(
        listen: "::1",
        port: 8742,
        srv: for({host, port} <- @six, do: {"_six._tcp.service.consul", host, port}),
        hosts: for({host, _} <- @six, do: {host, "::1"})
      )

    on_exit(fn -> Dnsmasq.stop(dns6) end)

    %{
      tmp: tmp,
      dns: dns,
      inetrc: Dnsmasq.inetrc(dns, Path.join(tmp, "inetrc")),
      dns6: dns6,
      inetrc6: Dnsmasq.inetrc(dns6, Path.join(tmp, "inetrc6"))
    }
  end

  test "-dist_listen false nodes listen nowhere and connect out to the SRV peers", ctx do
    servers =
      for {host, ip} <- @servers do
        {peer, node} = BeamNode.start("app-4910", host, ip, inetrc: ctx.inetrc)
        on_exit(fn -> BeamNode.stop(peer) end)
        assert BeamNode.listening?(ip, 4910)
        {peer, node}
      end

    server_nodes = Enum.map(servers, &elem(&1, 1))

    # One client with only -epmd_module, one with Caravan 1.x's -proto_dist.
    clients =
      for {{host, ip}, port, proto_dist} <- [
            {Enum.at(@clients, 0), 4911, false},
            {Enum.at(@clients, 1), 4912, true}
          ] do
        {peer, node} =
          BeamNode.start("cli-#{port}", host, ip,
            inetrc: ctx.inetrc,
            proto_dist: proto_dist,
            args: ["-dist_listen", "false"]
          )

        on_exit(fn -> BeamNode.stop(peer) end)

        assert {:ok, _} =
                 BeamNode.start_strategy(peer,
                   query: "_app._tcp.service.consul",
                   node_sname: "app",
                   nameservers: [Dnsmasq.nameserver(ctx.dns)],
                   poll_interval: 300
                 )

        {peer, node, ip, port}
      end

    for {peer, node, ip, port} <- clients do
      assert BeamNode.eventually(fn ->
               Enum.sort(BeamNode.call(peer, :erlang, :nodes, [:connected])) == server_nodes
             end),
             "#{node} connected to #{inspect(BeamNode.call(peer, :erlang, :nodes, [:connected]))}"

      # It listens on no port: not on the one from its name, and it
      # registered none (net_adm:names/0 answers, with nothing).
      refute BeamNode.listening?(ip, port)
      assert BeamNode.call(peer, :net_adm, :names, []) == {:ok, []}
      # Messages go both ways over the connection it opened.
      [server | _] = server_nodes
      assert BeamNode.call(peer, :erpc, :call, [server, :erlang, :node, []]) == server
    end

    # A -dist_listen false node is hidden: the servers see both clients as
    # hidden connections.
    client_nodes = clients |> Enum.map(&elem(&1, 1)) |> Enum.sort()

    for {peer, _} <- servers do
      assert Enum.sort(BeamNode.call(peer, :erlang, :nodes, [:hidden])) == client_nodes
    end

    assert Listeners.on_port(4369) == []
  end

  test "TLS distribution listens on the port from the name and forms a full mesh", ctx do
    certs = TlsCerts.write(Path.join(ctx.tmp, "tls"), "cluster", Enum.map(@tls, &elem(&1, 0)))

    nodes =
      for {host, ip} <- @tls do
        {peer, node} =
          BeamNode.start("app-4920", host, ip,
            inetrc: ctx.inetrc,
            args: TlsCerts.erl_args(certs.optfile)
          )

        on_exit(fn -> BeamNode.stop(peer) end)
        {peer, node, ip}
      end

    for {peer, _node, ip} <- nodes do
      assert BeamNode.listening?(ip, 4920)
      assert {:ok, [[~c"inet_tls"]]} = BeamNode.call(peer, :init, :get_argument, [:proto_dist])

      assert {:ok, _} =
               BeamNode.start_strategy(peer,
                 query: "_tls._tcp.service.consul",
                 node_sname: "app",
                 nameservers: [Dnsmasq.nameserver(ctx.dns)],
                 poll_interval: 300
               )
    end

    peers = for {peer, node, _} <- nodes, do: {peer, node}
    assert BeamNode.eventually(fn -> BeamNode.full_mesh?(peers) end), mesh_report(peers)

    # Every connection of every node runs over TLS.
    for {peer, _node} <- peers do
      {:ok, info} = BeamNode.call(peer, :net_kernel, :nodes_info, [])
      assert length(info) == 2

      for {_other, props} <- info do
        assert {:net_address, _, _host, :tls, :inet} = props[:address]
      end
    end

    assert Listeners.on_port(4369) == []
  end

  test "IPv6 distribution on ::1 listens on the ports from the names and forms a full mesh",
       ctx do
    nodes =
      for {host, port} <- @six do
        refute BeamNode.listening?(@v6, port)

        {peer, node} =
          BeamNode.start("app-#{port}", host, @v6,
            inetrc: ctx.inetrc6,
            args: ["-proto_dist", "inet6_tcp"]
          )

        on_exit(fn -> BeamNode.stop(peer) end)
        assert BeamNode.listening?(@v6, port)
        assert BeamNode.call(peer, :net_adm, :names, []) == {:ok, [{~c"app-#{port}", port}]}
        {peer, node}
      end

    for {peer, _node} <- nodes do
      assert {:ok, _} =
               BeamNode.start_strategy(peer,
                 query: "_six._tcp.service.consul",
                 node_sname: "app",
                 nameservers: ["[::1]:8742"],
                 poll_interval: 300
               )
    end

    assert BeamNode.eventually(fn -> BeamNode.full_mesh?(nodes) end), mesh_report(nodes)

    for {peer, _node} <- nodes do
      {:ok, info} = BeamNode.call(peer, :net_kernel, :nodes_info, [])

      for {_other, props} <- info do
        assert {:net_address, {@v6, _port}, _host, :tcp, :inet6} = props[:address]
      end
    end

    assert Listeners.on_port(4369) == []
  end

  defp mesh_report(nodes) do
    "no full mesh: " <>
      inspect(for {peer, node} <- nodes, do: {node, BeamNode.call(peer, Node, :list, [])})
  end
end
