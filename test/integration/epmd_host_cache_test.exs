defmodule Caravan.Epmd.HostCacheTest do
  # A real node (no epmd) with -caravan_nameservers pointing at a real
  # dnsmasq on port 8714, both on loopback addresses from
  # Caravan.Test.Loopback: the addresses its epmd module resolves for
  # peers' hosts are kept for a short while, SRV answers put their
  # targets' addresses there, and what is kept expires. Not async: the
  # node listens on its fixed distribution port.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Epmd.HostResolver
  alias Caravan.Test.{BeamNode, Dnsmasq, Loopback}

  @moduletag timeout: 120_000

  setup do
    listen = Loopback.address()
    ns = listen <> ":8714"

    dns =
      Dnsmasq.start(
        listen: listen,
        port: 8714,
        srv: [{"_app._tcp.service.consul", "web2.node.dc1.consul", 4372}],
        hosts: [
          {"web1.node.dc1.consul", "127.0.14.31"},
          {"web2.node.dc1.consul", "127.0.14.32"}
        ]
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)

    ip = Loopback.ip()
    host = to_string(:inet.ntoa(ip))
    {peer, _node} = BeamNode.start("app-4371", host, ip, args: ["-caravan_nameservers", ns])

    on_exit(fn -> BeamNode.stop(peer) end)
    %{peer: peer, ns: ns}
  end

  defp resolve(peer, host), do: BeamNode.call(peer, HostResolver, :resolve, [host, :inet])

  test "a remembered address is what resolve/2 returns, until it expires", %{peer: peer} do
    assert resolve(peer, ~c"web1.node.dc1.consul") == {:ok, {127, 0, 14, 31}}

    # The address kept wins over asking the nameservers again...
    :ok = BeamNode.call(peer, HostResolver, :remember, ["web1.node.dc1.consul", [{10, 9, 9, 9}]])
    assert resolve(peer, ~c"web1.node.dc1.consul") == {:ok, {10, 9, 9, 9}}

    # It expires: the nameservers' answer comes back by itself.
    assert BeamNode.eventually(fn ->
             resolve(peer, ~c"web1.node.dc1.consul") == {:ok, {127, 0, 14, 31}}
           end)
  end

  test "an SRV lookup of the strategy's client keeps its targets' addresses",
       %{peer: peer, ns: ns} do
    :ok = BeamNode.call(peer, HostResolver, :remember, ["web2.node.dc1.consul", [{10, 9, 9, 9}]])
    assert resolve(peer, ~c"web2.node.dc1.consul") == {:ok, {10, 9, 9, 9}}

    # The SRV answer's additional section says 127.0.14.32: the next poll
    # (Caravan.Cluster.Poll hands the addresses over) replaces what was
    # kept, so a changed address is seen at once.
    assert {:ok, [{4372, "web2.node.dc1.consul"}]} =
             BeamNode.call(peer, Caravan.DnsClient.Native, :get_nodes, [
               "_app._tcp.service.consul",
               [nameservers: [ns]]
             ])

    {:ok, config} =
      Caravan.Cluster.Config.new(
        query: "_app._tcp.service.consul",
        node_sname: "app",
        nameservers: [ns]
      )

    assert %{found: [_]} = BeamNode.call(peer, Caravan.Cluster.Poll, :run, [config])

    assert resolve(peer, ~c"web2.node.dc1.consul") == {:ok, {127, 0, 14, 32}}
  end

  test "without nameservers nothing is kept: hosts resolve as in plain OTP" do
    assert :ok = HostResolver.remember("localhost", [{10, 9, 9, 9}])
    assert HostResolver.resolve(~c"localhost", :inet) == :inet.getaddr(~c"localhost", :inet)
  end
end
