defmodule Caravan.LibclusterNodesTest do
  # libcluster's connect/disconnect path on real nodes. The real libcluster
  # is on hex.pm, which is not reachable here: each node gets the STAND-IN
  # written from libcluster 3.5.0's documented contract
  # (test/libcluster_standin/cluster_strategy.ex), loaded into that node
  # only (this test VM never loads it). The strategy is started the way
  # Cluster.Supervisor starts it, with a state holding libcluster's default
  # MFAs (:net_kernel.connect_node/1, :erlang.disconnect_node/1,
  # :erlang.nodes(:connected)). Nodes run -connect_all false, so `global`
  # adds no connections of its own and every connect and prune seen is the
  # strategy's.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.{BeamNode, Dnsmasq, Loopback, Libcluster, Listeners}
  alias Caravan.Test.Topology.State

  @moduletag :slow
  @moduletag timeout: 120_000

  @hosts [
    {"n1.node.dc1.consul", {127, 0, 9, 51}},
    {"n2.node.dc1.consul", {127, 0, 9, 52}},
    {"n3.node.dc1.consul", {127, 0, 9, 53}}
  ]
  @port 4960

  defp dnsmasq(hosts, listen) do
    dns =
      Dnsmasq.start(
        listen: listen,
        port: 8798,
        srv: for({host, _} <- hosts, do: {"_app._tcp.service.consul", host, @port}),
        hosts: for({host, ip} <- @hosts, do: {host, ip |> :inet.ntoa() |> to_string()})
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)
    dns
  end

  setup_all do
    Listeners.guard(4369)
    :ok
  end

  test "connects and prunes go through libcluster, which logs and reports each" do
    refute Code.ensure_loaded?(Cluster.Strategy)
    dns = dnsmasq(@hosts, Loopback.address())
    tmp = Path.join(System.tmp_dir!(), "caravan_lcn_#{System.unique_integer([:positive])}")
    File.mkdir_p!(tmp)
    on_exit(fn -> File.rm_rf!(tmp) end)
    inetrc = Dnsmasq.inetrc(dns, Path.join(tmp, "inetrc"))

    nodes =
      for {host, ip} <- @hosts do
        {peer, node} =
          BeamNode.start("app-#{@port}", host, ip,
            inetrc: inetrc,
            args: ["-connect_all", "false"]
          )

        on_exit(fn -> BeamNode.stop(peer) end)
        :ok = Libcluster.load_on(peer)
        :ok = BeamNode.call(peer, Libcluster, :record, [])
        {peer, node}
      end

    [{p1, n1}, {p2, n2}, {_p3, n3}] = nodes

    # n1 and n2 run the strategy with prune; n3 is only listed in DNS.
    for {peer, _} <- [{p1, n1}, {p2, n2}] do
      state = %State{
        topology: :caravan,
        config: [
          query: "_app._tcp.service.consul",
          node_sname: "app",
          nameservers: [Dnsmasq.nameserver(dns)],
          poll_interval: 200,
          prune: true
        ]
      }

      {:ok, _} = BeamNode.start_strategy(peer, [state], :info)
    end

    assert BeamNode.eventually(fn -> BeamNode.full_mesh?(nodes) end)

    # Every connection of the mesh is one libcluster connect_node event and
    # one "[libcluster:caravan] connected to" line on the node that made it.
    connects =
      for {peer, node} <- [{p1, n1}, {p2, n2}],
          {[:libcluster, :connect_node, :ok], %{duration: _}, %{node: to, topology: :caravan}} <-
            elem(BeamNode.call(peer, Libcluster, :recorded, []), 0),
          do: {node, to}

    pairs = Enum.map(connects, fn {a, b} -> Enum.sort([a, b]) end)
    assert Enum.sort(Enum.uniq(pairs)) == [[n1, n2], [n1, n3], [n2, n3]]

    for {peer, node} <- [{p1, n1}, {p2, n2}] do
      {_events, logs} = BeamNode.call(peer, Libcluster, :recorded, [])

      for {^node, to} <- connects,
          do: assert({:info, "[libcluster:caravan] connected to #{inspect(to)}"} in logs)
    end

    # DNS drops n3: both strategies prune it through disconnect_nodes.
    Dnsmasq.stop(dns)
    dnsmasq(Enum.take(@hosts, 2), dns.listen)

    for peer <- [p1, p2] do
      assert BeamNode.eventually(fn ->
               {events, logs} = BeamNode.call(peer, Libcluster, :recorded, [])

               match?(
                 [_ | _],
                 for(
                   {[:libcluster, :disconnect_node, :ok], _, %{node: ^n3}} <- events,
                   do: :ok
                 )
               ) and {:info, "[libcluster:caravan] disconnected from #{inspect(n3)}"} in logs
             end)

      refute n3 in BeamNode.call(peer, Node, :list, [])
    end

    assert BeamNode.call(p1, Node, :list, []) == [n2]
  end
end
