defmodule Caravan.Cluster.AddressRecordsTest do
  # Discovery from A/AAAA records (record_type: :a | :aaaa | :ip), as
  # libcluster's DNSPoll and dns_cluster users have it, against a real
  # dnsmasq on 127.0.9.1 serving several A and AAAA records for one name
  # (--host-record). The connect MFA is Caravan.Test.Topology's recorder;
  # real nodes named <basename>@<ip> are in Caravan.AddressClusterTest.
  use ExUnit.Case, async: false

  @moduletag :integration
  doctest Caravan.DnsClient.AddressRecords

  import ExUnit.CaptureLog
  import Caravan.Test.Topology, only: [state: 3]
  alias Caravan.Cluster.{Config, DnsStrategy}
  alias Caravan.Test.Dnsmasq

  @v4 ["127.0.9.21", "127.0.9.22", "127.0.9.23"]
  @v6 ["fd00::9:21", "fd00::9:22"]

  setup_all do
    dns =
      Dnsmasq.start(
        listen: "127.0.9.1",
        port: 8795,
        hosts:
          for(ip <- @v4 ++ @v6, do: {"app.service.consul", ip}) ++
            [{"v4only.service.consul", "127.0.9.31"}]
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)
    %{ns: Dnsmasq.nameserver(dns)}
  end

  defp start(ns, config) do
    base = [query: "app.service.consul", nameservers: [ns], poll_interval: 60_000]

    capture_log(fn ->
      start_supervised!({DnsStrategy, [state(Keyword.merge(base, config), self(), [])]})
    end)
  end

  defp connects(n) do
    for _ <- 1..n do
      assert_receive {:connect, node}, 5_000
      node
    end
    |> Enum.sort()
  end

  test "record_type: :a connects to <node_basename>@<ip> for every A record", %{ns: ns} do
    start(ns, record_type: :a, node_basename: "app")
    assert connects(3) == Enum.map(@v4, &:"app@#{&1}")
    refute_receive {:connect, _}, 300
  end

  test "record_type: :aaaa names nodes after the IPv6 text :inet.ntoa/1 gives", %{ns: ns} do
    start(ns, record_type: :aaaa, node_basename: "app-4371")
    assert connects(2) == [:"app-4371@fd00::9:21", :"app-4371@fd00::9:22"]
    refute_receive {:connect, _}, 300
    # The port rule reads such names: the basename's digits, the IPv6 host.
    assert Caravan.Epmd.dist_port(:"app-4371@fd00::9:21") == 4371

    assert Caravan.Epmd.Client.address_please(~c"app-4371", ~c"fd00::9:21", :inet6) ==
             {:ok, {0xFD00, 0, 0, 0, 0, 0, 9, 0x21}, 4371, 6}
  end

  test "record_type: :ip takes A and AAAA; a name with A records only is fine", %{ns: ns} do
    start(ns, record_type: :ip, node_basename: "app")
    assert connects(5) == Enum.sort(Enum.map(@v4 ++ @v6, &:"app@#{&1}"))
    stop_supervised!(:test)

    # NODATA for AAAA is an empty answer, not a failure.
    start(ns, record_type: :ip, node_basename: "app", query: "v4only.service.consul")
    assert connects(1) == [:"app@127.0.9.31"]
  end

  test "prune: a failed lookup keeps the cluster, an answer without an address prunes it" do
    hosts = fn ips -> for ip <- ips, do: {"app.service.consul", ip} end
    dns = Dnsmasq.start(listen: "127.0.9.1", port: 8796, hosts: hosts.(@v4))
    on_exit(fn -> Dnsmasq.stop(dns) end)
    {:ok, connected} = Agent.start_link(fn -> [] end)
    nodes = Enum.map(@v4, &:"app@#{&1}")

    capture_log(fn ->
      config = [
        query: "app.service.consul",
        record_type: :a,
        node_basename: "app",
        nameservers: [Dnsmasq.nameserver(dns)],
        poll_interval: 100,
        timeout: 100,
        prune: true
      ]

      start_supervised!({DnsStrategy, [state(config, self(), connected)]})
      assert connects(3) == nodes
      Agent.update(connected, fn _ -> nodes end)

      # The nameserver dies: polls fail (timeout), nothing is pruned.
      Dnsmasq.stop(dns)
      Process.sleep(600)
      refute_received {:disconnect, _}

      # It comes back without 127.0.9.23: that node is pruned, no other.
      dns = Dnsmasq.start(listen: "127.0.9.1", port: 8796, hosts: hosts.(Enum.take(@v4, 2)))
      on_exit(fn -> Dnsmasq.stop(dns) end)
      assert_receive {:disconnect, :"app@127.0.9.23"}, 5_000
      Process.sleep(300)
      refute_received {:disconnect, _}
    end)
  end

  describe "config" do
    test "record_type and node_basename are checked, with the fix in the message" do
      base = [query: "app.service.consul"]

      assert {:ok, %Config{record_type: :srv}} = Config.new(base ++ [node_sname: "app"])

      assert {:ok, %Config{record_type: :a, node_basename: "app", node_sname: nil}} =
               Config.new(base ++ [record_type: :a, node_basename: "app"])

      assert {:error,
              {:invalid_option, "invalid :record_type: :mx; expected :srv, :a, :aaaa or :ip"}} =
               Config.new(base ++ [record_type: :mx, node_basename: "app"])

      assert {:error, {:invalid_option, "invalid :node_basename: \"app-0\"; expected " <> _}} =
               Config.new(base ++ [record_type: :a, node_basename: "app-0"])

      assert {:error, {:invalid_option, "invalid :node_basename: \"a.b\"; expected " <> _}} =
               Config.new(base ++ [record_type: :ip, node_basename: "a.b"])

      # This test VM is not distributed: no name part to default to.
      assert {:error, {:invalid_option, "missing :node_basename; expected " <> rest}} =
               Config.new(base ++ [record_type: :aaaa])

      assert rest =~ "this node is not distributed"

      assert {:error,
              {:invalid_option,
               "invalid :dns_client: Caravan.DnsClient.Native with record_type: :a" <> _}} =
               Config.new(
                 base ++
                   [record_type: :a, node_basename: "app", dns_client: Caravan.DnsClient.Native]
               )

      # SRV still needs node_sname.
      assert {:error, {:invalid_option, "missing :node_sname" <> _}} = Config.new(base)
    end

    test "DNSPoll's :polling_interval is read as :poll_interval" do
      assert {:ok, %Config{poll_interval: 750}} =
               Config.new(
                 query: "q",
                 record_type: :a,
                 node_basename: "app",
                 polling_interval: 750
               )

      assert {:ok, %Config{poll_interval: 5_000}} = Config.new(query: "q", node_sname: "app")
    end
  end
end
