defmodule Caravan.AddressClusterTest do
  # A/AAAA discovery with real nodes: nodes named <basename>@<ip>, as
  # libcluster DNSPoll and dns_cluster users name them, each on its own
  # loopback address and the port rule's default 4370, find each other in
  # the A records of one name served by a real dnsmasq (--host-record) and
  # form a full mesh, with no epmd running. node_basename is left out, so
  # each node uses its own name part, as dns_cluster does.
  use ExUnit.Case, async: false

  alias Caravan.Test.{BeamNode, Dnsmasq, Listeners, Recorder}

  @moduletag :slow
  @moduletag timeout: 120_000

  @ips [{127, 0, 9, 41}, {127, 0, 9, 42}, {127, 0, 9, 43}]

  setup_all do
    Listeners.guard(4369)

    dns =
      Dnsmasq.start(
        listen: "127.0.9.40",
        port: 8797,
        hosts: for(ip <- @ips, do: {"app.service.consul", ip |> :inet.ntoa() |> to_string()})
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)
    %{ns: Dnsmasq.nameserver(dns)}
  end

  test "nodes named app@<ip> form a full mesh from A records", %{ns: ns} do
    nodes =
      for ip <- @ips do
        host = ip |> :inet.ntoa() |> to_string()
        {peer, node} = BeamNode.start("app", host, ip)
        on_exit(fn -> BeamNode.stop(peer) end)
        # The port rule's default: a name part without digits listens on 4370.
        assert BeamNode.listening?(ip, 4370)
        {peer, node}
      end

    assert Enum.map(nodes, &elem(&1, 1)) == [
             :"app@127.0.9.41",
             :"app@127.0.9.42",
             :"app@127.0.9.43"
           ]

    for {peer, _node} <- nodes do
      :ok = BeamNode.call(peer, Recorder, :start, [])

      {:ok, _} =
        BeamNode.start_strategy(
          peer,
          [
            query: "app.service.consul",
            record_type: :a,
            nameservers: [ns],
            poll_interval: 200
          ],
          :debug
        )
    end

    assert BeamNode.eventually(fn -> BeamNode.full_mesh?(nodes) end),
           "no full mesh: #{inspect(for {p, n} <- nodes, do: {n, BeamNode.call(p, Node, :list, [])})}"

    for {peer, _node} <- nodes do
      # A distributed node has nothing to warn about at start.
      assert BeamNode.call(peer, Recorder, :count, ["not distributed"]) == 0
      assert BeamNode.call(peer, Recorder, :count, ["cannot connect"]) == 0
    end

    # The strategies made the connections (the first node started connects
    # to the other two; global may join those two): at least two lines.
    connected_lines =
      nodes
      |> Enum.map(fn {peer, _} ->
        BeamNode.call(peer, Recorder, :count, ["connected to app@127.0.9.4"])
      end)
      |> Enum.sum()

    assert connected_lines >= 2
  end
end
