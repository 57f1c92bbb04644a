defmodule Caravan.SrvLookupTest do
  # Lookups against a real dnsmasq, on a loopback address of this file's own
  # (Caravan.Test.Loopback), so the file runs async.
  use ExUnit.Case, async: true

  @moduletag :integration

  alias Caravan.Test.{Dnsmasq, Loopback}

  setup_all do
    listen = Loopback.address()

    dns =
      Dnsmasq.start(
        listen: listen,
        port: 8653,
        srv: [
          {"_web._tcp.service.consul", "web1.node.dc1.consul", 4370},
          {"_web._tcp.service.consul", "web2.node.dc1.consul", 4371}
        ],
        hosts: [{"web1.node.dc1.consul", "127.0.0.2"}]
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)
    # Nothing listens on `dead`.
    %{ns: Dnsmasq.nameserver(dns), listen: listen, dead: Loopback.address() <> ":8654"}
  end

  test "SRV records come back with priority, weight, port, target and the additional section's addresses",
       %{ns: ns} do
    assert {:ok, records} = Caravan.DNS.lookup_srv("_web._tcp.service.consul", nameservers: [ns])

    # dnsmasq puts the A record of web1 (it knows no address of web2) in
    # the answer's additional section, as Consul does.
    assert Enum.sort_by(records, & &1.port) == [
             %{
               priority: 1,
               weight: 1,
               port: 4370,
               target: "web1.node.dc1.consul",
               addresses: [{127, 0, 0, 2}],
               host: "web1.node.dc1.consul",
               # Two records fit one UDP datagram: no TCP.
               transport: "udp"
             },
             %{
               priority: 1,
               weight: 1,
               port: 4371,
               target: "web2.node.dc1.consul",
               addresses: [],
               host: "web2.node.dc1.consul",
               transport: "udp"
             }
           ]
  end

  test "1.x-style {ip, port} nameservers work", %{listen: listen} do
    assert {:ok, [_, _]} =
             Caravan.DNS.lookup_srv("_web._tcp.service.consul",
               nameservers: [{listen, "8653"}]
             )
  end

  test "NXDOMAIN, NODATA and REFUSED are told apart", %{ns: ns} do
    assert {:error, {:nxdomain, _}} =
             Caravan.DNS.lookup_srv("_none._tcp.service.consul", nameservers: [ns])

    assert {:error, {:nodata, _}} =
             Caravan.DNS.lookup_srv("web1.node.dc1.consul", nameservers: [ns])

    # dnsmasq refuses names it is not local for and has no upstream for.
    assert {:error, {:server_failure, message}} =
             Caravan.DNS.lookup_srv("_web._tcp.example.org", nameservers: [ns])

    assert message =~ "Refused"
  end

  test "a closed nameserver port is an error naming it (ICMP refused), not a timeout",
       %{dead: dead} do
    # Nothing listens on this loopback port: the connected UDP socket gets
    # ECONNREFUSED from the ICMP port-unreachable.
    assert {:error, {:transport, message}} =
             Caravan.DNS.lookup_srv("_web._tcp.service.consul",
               nameservers: [dead],
               timeout: 5_000
             )

    assert message =~ "connection refused"
    assert message =~ dead
    refute message =~ "transport:"
  end

  test "lookup_srv_async/2 returns a reference and the answer arrives as a message", %{ns: ns} do
    assert {:ok, ref} =
             Caravan.DNS.lookup_srv_async("_web._tcp.service.consul", nameservers: [ns])

    assert is_reference(ref)
    assert_receive {:caravan_srv, ^ref, {:ok, [_, _]}}, 5_000
  end

  test "a caller that dies before the answer leaves nothing behind", %{ns: ns} do
    {pid, mref} =
      spawn_monitor(fn ->
        {:ok, _} = Caravan.DNS.lookup_srv_async("_web._tcp.service.consul", nameservers: [ns])
      end)

    assert_receive {:DOWN, ^mref, :process, ^pid, :normal}
    # The resolver keeps working for everyone else.
    assert {:ok, [_, _]} = Caravan.DNS.lookup_srv("_web._tcp.service.consul", nameservers: [ns])
  end

  describe "Caravan.DnsClient.Native" do
    test "gives sorted {port, target} pairs", %{ns: ns} do
      assert Caravan.DnsClient.Native.get_nodes("_web._tcp.service.consul", nameservers: [ns]) ==
               {:ok, [{4370, "web1.node.dc1.consul"}, {4371, "web2.node.dc1.consul"}]}
    end

    test "reads NXDOMAIN and NODATA as no peers", %{ns: ns} do
      assert {:ok, []} =
               Caravan.DnsClient.Native.get_nodes("_no._tcp.service.consul", nameservers: [ns])

      assert {:ok, []} =
               Caravan.DnsClient.Native.get_nodes("web1.node.dc1.consul", nameservers: [ns])
    end

    test "never reads a failure as no peers", %{dead: dead} do
      assert {:error, {:transport, _}} =
               Caravan.DnsClient.Native.get_nodes("_web._tcp.service.consul",
                 nameservers: [dead],
                 timeout: 200
               )
    end

    test "a target with no IP address under node_host: :ip reads the same from both clients",
         %{ns: ns} do
      # web2 has no address: none in the additional section, and it does
      # not resolve (NXDOMAIN from dnsmasq for the native client; the OS
      # resolver for :inet_res, which has no record of it either).
      opts = [nameservers: [ns], node_host: :ip]

      expected =
        ~s(SRV target "web2.node.dc1.consul" has no IP address (node_host: :ip; ) <>
          ~s(none in the additional section and it does not resolve\))

      for client <- [Caravan.DnsClient.Native, Caravan.DnsClient.InetRes] do
        assert client.get_nodes("_web._tcp.service.consul", opts) ==
                 {:ok, [{4370, "127.0.0.2"}, {:invalid, expected}]},
               inspect(client)
      end
    end
  end
end
