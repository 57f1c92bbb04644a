defmodule Caravan.EndToEndTest do
  # Three real BEAM nodes (separate OS processes) on 127.0.0.2..4, all on
  # distribution port 4370, with Caravan's epmd flags and no epmd daemon,
  # find each other through SRV records served by a real dnsmasq and form a
  # full mesh. One node uses Caravan 1.x's -proto_dist flag.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.{BeamNode, Dnsmasq}

  @moduletag :end_to_end
  @moduletag timeout: 120_000

  @hosts [
    {"web1.node.dc1.consul", {127, 0, 0, 2}},
    {"web2.node.dc1.consul", {127, 0, 0, 3}},
    {"web3.node.dc1.consul", {127, 0, 0, 4}}
  ]

  setup_all do
    dns =
      Dnsmasq.start(
        port: 8600,
        srv:
          for {host, _ip} <- @hosts, name <- ["_app._tcp.service.consul", "app.service.consul"] do
            {name, host, 4370}
          end,
        hosts: for({host, ip} <- @hosts, do: {host, ip |> :inet.ntoa() |> to_string()})
      )

    inetrc = Dnsmasq.inetrc(dns, Path.join(System.tmp_dir!(), "caravan_e2e_inetrc"))
    on_exit(fn -> Dnsmasq.stop(dns) end)
    %{dns: dns, inetrc: inetrc}
  end

  test "three epmd-less nodes form a full mesh from SRV records", %{dns: dns, inetrc: inetrc} do
    refute BeamNode.listening?({127, 0, 0, 1}, 4369), "an epmd is running before the test"

    nodes =
      for {{host, ip}, i} <- Enum.with_index(@hosts) do
        # The first node uses Caravan 1.x's flags; the others only -epmd_module.
        {peer, node} = BeamNode.start("app-4370", host, ip, proto_dist: i == 0, inetrc: inetrc)
        on_exit(fn -> BeamNode.stop(peer) end)
        {peer, node, ip}
      end

    # Every node listens on the port from its name, on its own address.
    for {_peer, _node, ip} <- nodes, do: assert(BeamNode.listening?(ip, 4370))

    # The first node is really running the -proto_dist module.
    [{peer1, _, _} | _] = nodes

    assert {:ok, [[~c"Elixir.Caravan.Epmd.Dist"]]} =
             BeamNode.call(peer1, :init, :get_argument, [:proto_dist])

    assert {:file, _} = BeamNode.call(peer1, :code, :is_loaded, [Caravan.Epmd.Dist_dist])

    for {peer, _, _} <- tl(nodes),
        do: refute(BeamNode.call(peer, :code, :is_loaded, [Caravan.Epmd.Dist_dist]))

    # Half the nodes use the standard query, half the RFC 2782 one.
    for {{peer, _node, _ip}, i} <- Enum.with_index(nodes) do
      query = if rem(i, 2) == 0, do: "_app._tcp.service.consul", else: "app.service.consul"

      assert {:ok, _} =
               BeamNode.start_strategy(peer,
                 query: query,
                 node_sname: "app",
                 nameservers: [Dnsmasq.nameserver(dns)],
                 poll_interval: 500
               )
    end

    peers = for {peer, node, _ip} <- nodes, do: {peer, node}

    assert BeamNode.eventually(fn -> BeamNode.full_mesh?(peers) end),
           "no full mesh: " <>
             inspect(
               for {peer, node, _} <- nodes, do: {node, BeamNode.call(peer, Node, :list, [])}
             )

    # Still no epmd anywhere, on any of the addresses.
    for ip <- [{127, 0, 0, 1} | Enum.map(@hosts, &elem(&1, 1))] do
      refute BeamNode.listening?(ip, 4369), "something listens on #{:inet.ntoa(ip)}:4369"
    end

    # Messages cross the mesh: node 3 reaches node 1 by name.
    [{_, node1, _}, _, {peer3, _, _}] = nodes
    assert BeamNode.call(peer3, :rpc, :call, [node1, :erlang, :node, []]) == node1
  end
end
