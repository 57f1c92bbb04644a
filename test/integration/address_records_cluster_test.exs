defmodule Caravan.AddressClusterTest do
  # A/AAAA discovery with real nodes: nodes named <basename>@<ip>, as
  # libcluster DNSPoll and dns_cluster users name them, each on its own
  # loopback address and the port rule's default 4370, find each other in
  # the A records of one name served by a real dnsmasq (--host-record) and
  # form a full mesh, with no epmd running. node_basename is left out, so
  # each node uses its own name part, as dns_cluster does.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.{BeamNode, Dnsmasq, Loopback, Listeners, Recorder}

  @moduletag :slow
  @moduletag timeout: 120_000

  @ips [{127, 0, 9, 41}, {127, 0, 9, 42}, {127, 0, 9, 43}]
  @ips6 [{0xFD00, 9, 0, 0, 0, 0, 0, 1}, {0xFD00, 9, 0, 0, 0, 0, 0, 2}]

  # IPv6 loopback has one address (::1), so the IPv6 test adds fd00:9::1 and
  # fd00:9::2 to lo, which it does only in a network namespace of its own
  # (the way script/otp runs tests: unshare -n), never on a shared host.
  @own_netns File.read_link("/proc/self/ns/net") != File.read_link("/proc/1/ns/net")

  setup_all do
    Listeners.guard(4369)

    dns =
      Dnsmasq.start(
        listen: Loopback.address(),
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

  @tag skip:
         if(@own_netns,
           do: false,
           else: "adds IPv6 addresses to lo: run in its own network namespace (unshare -n)"
         )
  test "nodes named app@<IPv6> form a full mesh from AAAA records" do
    # Also when the skip tag is overridden (--include skip): never touch a
    # shared host's lo.
    unless @own_netns, do: flunk("refusing to add IPv6 addresses outside a network namespace")

    for ip <- @ips6 do
      address = "#{:inet.ntoa(ip)}/128"
      {_, 0} = System.cmd("ip", ["-6", "addr", "add", address, "dev", "lo"])
      on_exit(fn -> System.cmd("ip", ["-6", "addr", "del", address, "dev", "lo"]) end)
    end

    dns =
      Dnsmasq.start(
        listen: "::1",
        port: 8799,
        hosts: for(ip <- @ips6, do: {"app6.service.consul", ip |> :inet.ntoa() |> to_string()})
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)

    nodes =
      for ip <- @ips6 do
        host = ip |> :inet.ntoa() |> to_string()
        {peer, node} = BeamNode.start("app", host, ip, args: ["-proto_dist", "inet6_tcp"])
        on_exit(fn -> BeamNode.stop(peer) end)
        assert BeamNode.listening?(ip, 4370)
        {peer, node}
      end

    assert Enum.map(nodes, &elem(&1, 1)) == [:"app@fd00:9::1", :"app@fd00:9::2"]

    for {peer, _node} <- nodes do
      {:ok, _} =
        BeamNode.start_strategy(peer,
          query: "app6.service.consul",
          record_type: :aaaa,
          nameservers: ["[::1]:8799"],
          poll_interval: 200
        )
    end

    assert BeamNode.eventually(fn -> BeamNode.full_mesh?(nodes) end)
  end
end
