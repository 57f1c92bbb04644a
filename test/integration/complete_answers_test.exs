defmodule Caravan.CompleteAnswersTest do
  # Discovery sees every instance from a server that trims UDP
  # answers silently (Caravan.Test.ConsulDns, a stand-in written from
  # Consul's agent/dns.go because Consul cannot be installed here), and
  # stays on UDP with a well-behaved server (the real dnsmasq) when the
  # answer fits. Every server has a loopback address of its own
  # (Caravan.Test.Loopback). Not async: the 64-lookups-at-once test holds
  # its 2 s lookup bound only without other files' load beside it (run
  # async, it timed out here on a loaded 2-core machine).
  use ExUnit.Case, async: false

  @moduletag :integration

  import ExUnit.CaptureIO

  alias Caravan.Test.{ConsulDns, Dnsmasq, Loopback}

  @port 8612

  # Every test starts with no memory of which queries needed TCP
  # (caravan_core::tcp_first), so the counts below are per test.
  setup do
    Caravan.Native.forget_transports()
    :ok
  end

  describe "against the Consul stand-in" do
    for n <- [40, 500], form <- [:node, :addr] do
      @tag n: n, form: form
      test "get_nodes/2 sees all #{n} instances with .#{form}. targets, both query forms",
           %{n: n, form: form} do
        server =
          start_supervised!(
            {ConsulDns, port: @port, ip: Loopback.ip(), instances: n, target: form}
          )

        ns = ConsulDns.nameserver(server)

        expected =
          for i <- ConsulDns.instances(server), do: {i.port, ConsulDns.expected_host(i, form)}

        for query <- ["web.service.consul", "_web._tcp.service.dc1.consul"] do
          assert {:ok, peers} = Caravan.DnsClient.Native.get_nodes(query, nameservers: [ns])
          assert length(peers) == n
          assert Enum.sort(peers) == Enum.sort(expected)
        end

        # One UDP query and one TCP confirmation per query form...
        assert ConsulDns.queries(server) == %{udp: 2, tcp: 2}

        # ... and then one query per lookup: straight over TCP, since the
        # last complete answer to the same query did not fit UDP.
        assert {:ok, peers} =
                 Caravan.DnsClient.Native.get_nodes("web.service.consul", nameservers: [ns])

        assert Enum.sort(peers) == Enum.sort(expected)
        assert ConsulDns.queries(server) == %{udp: 2, tcp: 3}
      end
    end

    test "AAAA targets (IPv6 .addr.) and an answer that fits stay complete" do
      server =
        start_supervised!(
          {ConsulDns,
           port: @port, ip: Loopback.ip(), instances: 40, target: :addr, family: :inet6}
        )

      assert {:ok, peers} =
               Caravan.DnsClient.Native.get_nodes("web.service.consul",
                 nameservers: [ConsulDns.nameserver(server)]
               )

      assert length(peers) == 40
      assert {20_001, "fd00::1"} in peers

      assert ConsulDns.queries(server) == %{udp: 1, tcp: 1}

      # Two instances fit the UDP answer with room to spare. The lookup
      # after the shrink still goes straight over TCP (the last complete
      # answer did not fit UDP); its answer fits, so the next is on UDP
      # alone.
      :ok = ConsulDns.set_instances(server, 2)
      opts = [nameservers: [ConsulDns.nameserver(server)]]

      assert {:ok, records} = Caravan.DNS.lookup_srv("web.service.consul", opts)
      assert length(records) == 2
      assert Enum.all?(records, &(&1.transport == "tcp"))
      assert ConsulDns.queries(server) == %{udp: 1, tcp: 2}

      assert {:ok, records} = Caravan.DNS.lookup_srv("web.service.consul", opts)
      assert length(records) == 2
      assert Enum.all?(records, &(&1.transport == "udp"))
      assert ConsulDns.queries(server) == %{udp: 2, tcp: 2}
    end

    test "a changed instance set is seen at the next lookup" do
      server = start_supervised!({ConsulDns, port: @port, ip: Loopback.ip(), instances: 40})
      opts = [nameservers: [ConsulDns.nameserver(server)]]
      assert {:ok, peers} = Caravan.DnsClient.Native.get_nodes("web.service.consul", opts)
      assert length(peers) == 40
      :ok = ConsulDns.set_instances(server, 37)
      assert {:ok, peers} = Caravan.DnsClient.Native.get_nodes("web.service.consul", opts)
      assert length(peers) == 37
    end

    test "mix caravan.lookup lists every record and says the answer came over TCP" do
      server = start_supervised!({ConsulDns, port: @port, ip: Loopback.ip(), instances: 40})

      out =
        capture_io(fn ->
          Mix.Tasks.Caravan.Lookup.run([
            "_web._tcp.service.consul",
            "--nameserver",
            ConsulDns.nameserver(server),
            "--node-sname",
            "web"
          ])
        end)

      for i <- 1..40, do: assert(out =~ "web-#{20_000 + i}@node#{i}.node.dc1.consul")
      assert out =~ "40 records, answered over tcp"
    end
  end

  test "a failed lookup names the nameservers asked, each word once" do
    # Nothing listens on these.
    dead1 = Loopback.address() <> ":8617"
    dead2 = Loopback.address() <> ":8618"

    error =
      assert_raise Mix.Error, fn ->
        Mix.Tasks.Caravan.Lookup.run(["web.service.consul", "--nameserver", dead1])
      end

    assert error.message =~ "transport: UDP to #{dead1}: connection refused"
    refute error.message =~ ~r/\b(\w+): \1:/

    # Several nameservers: each is named.
    assert {:error, {:transport, message}} =
             Caravan.DNS.lookup_srv("web.service.consul", nameservers: [dead1, dead2])

    assert message =~ dead1 and message =~ dead2
  end

  describe "against dnsmasq (sets TC, echoes OPT)" do
    setup do
      srv = for i <- 1..8, do: {"_web._tcp.service.consul", "n#{i}.node.dc1.consul", 20_000 + i}
      hosts = for i <- 1..8, do: {"n#{i}.node.dc1.consul", "10.0.0.#{i}"}
      big = for i <- 1..64, do: {"_big._tcp.service.consul", "b#{i}.node.dc1.consul", 21_000 + i}

      dns =
        Dnsmasq.start(
          listen: Loopback.address(),
          port: 8613,
          srv: srv ++ big,
          hosts: hosts,
          extra: ["--log-queries=extra"]
        )

      on_exit(fn -> Dnsmasq.stop(dns) end)
      drain_log(dns)
      %{dns: dns, ns: Dnsmasq.nameserver(dns)}
    end

    test "an answer that fits stays on UDP: one query per lookup", %{dns: dns, ns: ns} do
      for _ <- 1..5 do
        assert {:ok, records} =
                 Caravan.DNS.lookup_srv("_web._tcp.service.consul", nameservers: [ns])

        assert length(records) == 8
        assert Enum.all?(records, &(&1.transport == "udp"))
      end

      # dnsmasq's query log: one SRV query per lookup (a TCP confirmation
      # would log a second one, as the next test shows).
      log = drain_log(dns)
      assert length(Regex.scan(~r/query\[SRV\] _web\._tcp/, log)) == 5
    end

    test "an answer that does not fit comes complete over TCP", %{dns: dns, ns: ns} do
      assert {:ok, records} =
               Caravan.DNS.lookup_srv("_big._tcp.service.consul", nameservers: [ns])

      assert length(records) == 64
      assert Enum.all?(records, &(&1.transport == "tcp"))
      # The UDP query (TC set) and its TCP confirmation.
      assert length(Regex.scan(~r/query\[SRV\] _big\._tcp/, drain_log(dns))) == 2

      # Then one query per lookup, straight over TCP: a poll whose answer
      # outgrew UDP costs one query, not two.
      for _ <- 1..4 do
        assert {:ok, records} =
                 Caravan.DNS.lookup_srv("_big._tcp.service.consul", nameservers: [ns])

        assert length(records) == 64
        assert Enum.all?(records, &(&1.transport == "tcp"))
      end

      assert length(Regex.scan(~r/query\[SRV\] _big\._tcp/, drain_log(dns))) == 4
    end
  end

  test "64 nodes polling at once hold against dnsmasq's default 20 TCP connections" do
    # 64 records do not fit UDP, so every lookup goes over TCP; with
    # connections kept between polls, 20 lookups held dnsmasq's 20 TCP
    # slots and the other 44 never got an answer. Each lookup
    # here stands for one node's poll; all 64 start together, 5 rounds.
    big = for i <- 1..64, do: {"_big._tcp.service.consul", "b#{i}.node.dc1.consul", 21_000 + i}
    dns = Dnsmasq.start(listen: Loopback.address(), port: 8616, srv: big)
    on_exit(fn -> Dnsmasq.stop(dns) end)
    ns = Dnsmasq.nameserver(dns)

    for _round <- 1..5 do
      results =
        1..64
        |> Task.async_stream(
          fn _ -> Caravan.DNS.lookup_srv("_big._tcp.service.consul", nameservers: [ns]) end,
          max_concurrency: 64,
          timeout: 10_000
        )
        |> Enum.map(fn {:ok, result} -> result end)

      assert Enum.all?(results, &match?({:ok, [_ | _]}, &1)),
             inspect(Enum.reject(results, &match?({:ok, _}, &1)))

      assert Enum.all?(results, fn {:ok, records} -> length(records) == 64 end)
    end
  end

  # dnsmasq logs to its stdout (the port, owned by the test process).
  defp drain_log(dns, acc \\ "") do
    port = dns.port

    receive do
      {^port, {:data, text}} -> drain_log(dns, acc <> text)
    after
      300 -> acc
    end
  end
end
