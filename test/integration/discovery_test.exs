defmodule Caravan.DiscoveryTest do
  # Discovery against a real dnsmasq (ports 8760-8769) on a loopback
  # address of each test's own (Caravan.Test.Loopback, so the file runs
  # async): the shapes of real Consul, Nomad and Kubernetes answers, and
  # the strategy's rules (errors are not "no peers", prune, several
  # queries, the atom cap).
  # libcluster is not installable here (no hex), so Caravan.Test.Topology
  # stands in for its state and its connect/disconnect hooks.
  use ExUnit.Case, async: true

  @moduletag :integration

  import ExUnit.CaptureLog
  import Caravan.Test.Topology, only: [state: 3]
  alias Caravan.Cluster.DnsStrategy
  alias Caravan.Test.{Dnsmasq, Loopback}

  # This test's address: the same for every dnsmasq it starts (some tests
  # restart theirs with new records).
  defp listen do
    with nil <- Process.get(:listen), do: tap(Loopback.address(), &Process.put(:listen, &1))
  end

  defp dnsmasq(port, srv, opts \\ []) do
    dns = Dnsmasq.start([listen: listen(), port: port, srv: srv] ++ opts)
    on_exit(fn -> Dnsmasq.stop(dns) end)
    dns
  end

  defp many(query, n, first_port \\ 20_000),
    do: for(i <- 1..n, do: {query, "web#{i}.node.dc1.consul", first_port + i})

  defp strategy(ns, config, connected \\ []) do
    base = [node_sname: "app", nameservers: [ns], poll_interval: 200]
    start_supervised!({DnsStrategy, [state(Keyword.merge(base, config), self(), connected)]})
  end

  # The distinct nodes connected within `ms` (the stand-in list_nodes may
  # report none, so the same nodes come back at every poll).
  defp connects(ms \\ 1_500) do
    deadline = System.monotonic_time(:millisecond) + ms
    collect(deadline, MapSet.new()) |> Enum.sort()
  end

  defp collect(deadline, acc) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {:connect, node} -> collect(deadline, MapSet.put(acc, node))
    after
      left -> acc
    end
  end

  describe "complete answers (EDNS0, TCP on truncation)" do
    test "50 and 500 SRV records come back whole" do
      dns =
        dnsmasq(
          8760,
          many("_big._tcp.service.consul", 500) ++ many("_mid._tcp.service.consul", 50)
        )

      ns = Dnsmasq.nameserver(dns)

      # Without EDNS0 and TCP, the same server answers a plain UDP query with
      # what fits in 512 bytes (RFC 1035): the test would catch a Caravan
      # that lost either.
      assert {answers, true = _truncated} = plain_udp_query(dns, ~c"_mid._tcp.service.consul")
      assert answers < 50

      for {query, n} <- [{"_mid._tcp.service.consul", 50}, {"_big._tcp.service.consul", 500}] do
        assert {:ok, records} = Caravan.DNS.lookup_srv(query, nameservers: [ns], timeout: 5_000)
        assert length(records) == n
        assert records |> Enum.map(& &1.port) |> Enum.sort() == Enum.to_list(20_001..(20_000 + n))
      end
    end

    test "the strategy connects to all 500" do
      dns = dnsmasq(8761, many("_big._tcp.service.consul", 500))

      strategy(Dnsmasq.nameserver(dns),
        query: "_big._tcp.service.consul",
        timeout: 5_000,
        poll_interval: 10_000
      )

      assert length(connects(8_000)) == 500
    end
  end

  # One SRV query over UDP with no EDNS0 and no retry over TCP:
  # {answer records in the reply, TC bit}. The message is built and read
  # here (RFC 1035, 4.1) rather than with OTP's undocumented :inet_dns,
  # whose decoder refuses some truncated replies on OTP 27+.
  defp plain_udp_query(dns, name) do
    labels =
      for label <- String.split(to_string(name), "."),
          into: <<>>,
          do: <<byte_size(label), label::binary>>

    # ID 7, RD set, one question: SRV (33), class IN (1).
    query = <<7::16, 0x0100::16, 1::16, 0::16, 0::16, 0::16, labels::binary, 0, 33::16, 1::16>>

    {:ok, socket} = :gen_udp.open(0, [:binary, active: false])
    :ok = :gen_udp.send(socket, dns.ip, dns.dns_port, query)
    {:ok, {_ip, _port, reply}} = :gen_udp.recv(socket, 0, 2_000)
    :gen_udp.close(socket)

    <<7::16, 1::1, _opcode::4, _aa::1, tc::1, _rd::1, _ra::1, _z::3, 0::4, 1::16, ancount::16,
      _nscount::16, _arcount::16, body::binary>> = reply

    {:ok, <<_qtype::16, _qclass::16, answers::binary>>} = skip_name(body)
    {count_records(answers, ancount), tc == 1}
  end

  # Complete resource records at the start of `bin`, at most `max`.
  defp count_records(_bin, 0), do: 0

  defp count_records(bin, max) do
    case skip_name(bin) do
      {:ok, <<_type::16, _class::16, _ttl::32, len::16, _rdata::binary-size(len), rest::binary>>} ->
        1 + count_records(rest, max - 1)

      _incomplete ->
        0
    end
  end

  # Skips a domain name: labels ending in the root label or a compression
  # pointer (RFC 1035, 4.1.4).
  defp skip_name(<<0, rest::binary>>), do: {:ok, rest}
  defp skip_name(<<3::2, _offset::14, rest::binary>>), do: {:ok, rest}
  defp skip_name(<<0::2, len::6, _label::binary-size(len), rest::binary>>), do: skip_name(rest)
  defp skip_name(_bin), do: :error

  describe "node_host and the target forms of Consul, Nomad and Kubernetes" do
    setup do
      srv = [
        {"_app._tcp.service.consul", "web1.node.dc1.consul", 5001},
        # Consul 1.7-1.18 for a service registered with an address (Nomad).
        {"_app._tcp.service.consul", "7f000405.addr.dc1.consul", 5002},
        {"_app._tcp.service.consul", "fd000000000000000000000000000001.addr.dc1.consul", 5003},
        # Known to dnsmasq only through --address: not in the additional
        # section, so :ip has to resolve it.
        {"_app._tcp.service.consul", "web4.node.dc1.consul", 5004},
        {"_epmd._tcp.app.default.svc.cluster.local", "app-0.app.default.svc.cluster.local", 5005},
        {"_epmd._tcp.app.default.svc.cluster.local", "app-1.app.default.svc.cluster.local", 5006}
      ]

      dns =
        dnsmasq(8762, srv,
          hosts: [
            {"web1.node.dc1.consul", "127.0.4.11"},
            {"app-0.app.default.svc.cluster.local", "10.1.0.5"},
            {"app-1.app.default.svc.cluster.local", "fd00::6"}
          ],
          extra: ["--local=/cluster.local/", "--address=/web4.node.dc1.consul/127.0.4.14"]
        )

      %{ns: Dnsmasq.nameserver(dns)}
    end

    test ":auto keeps node targets and decodes .addr. targets (IPv4 and IPv6)", %{ns: ns} do
      strategy(ns, query: "_app._tcp.service.consul")

      assert connects() == [
               :"app-5001@web1.node.dc1.consul",
               :"app-5002@127.0.4.5",
               :"app-5003@fd00::1",
               :"app-5004@web4.node.dc1.consul"
             ]
    end

    test ":target builds Caravan 1.x's names", %{ns: ns} do
      strategy(ns, query: "_app._tcp.service.consul", node_host: :target)

      assert :"app-5002@7f000405.addr.dc1.consul" in connects()
    end

    test ":ip takes the additional section, decodes .addr. and resolves the rest", %{ns: ns} do
      strategy(ns, query: "_app._tcp.service.consul", node_host: :ip)

      assert connects() == [
               :"app-5001@127.0.4.11",
               :"app-5002@127.0.4.5",
               :"app-5003@fd00::1",
               :"app-5004@127.0.4.14"
             ]
    end

    test "Kubernetes headless-service answers, with pod IPs in IPv4 and IPv6", %{ns: ns} do
      strategy(ns, query: "_epmd._tcp.app.default.svc.cluster.local")

      assert connects() == [
               :"app-5005@app-0.app.default.svc.cluster.local",
               :"app-5006@app-1.app.default.svc.cluster.local"
             ]

      stop_supervised!(:test)
      strategy(ns, query: "_epmd._tcp.app.default.svc.cluster.local", node_host: :ip)
      assert connects() == [:"app-5005@10.1.0.5", :"app-5006@fd00::6"]
    end

    test "several queries per topology: the union is connected", %{ns: ns} do
      queries = ["_app._tcp.service.consul", "_epmd._tcp.app.default.svc.cluster.local"]
      strategy(ns, query: queries)

      assert length(connects()) == 6
    end

    test "a target :ip cannot resolve is skipped with one warning", %{ns: ns} do
      dns = dnsmasq(8763, [{"_x._tcp.service.consul", "gone.node.dc1.consul", 5007}])

      log =
        capture_log(fn ->
          strategy(Dnsmasq.nameserver(dns),
            query: "_x._tcp.service.consul",
            node_host: :ip,
            poll_interval: 100
          )

          Process.sleep(600)
        end)

      refute_received {:connect, _}
      assert [_] = Regex.scan(~r/\[warning\].*gone\.node\.dc1\.consul.*has no IP address/, log)
      _ = ns
    end
  end

  describe "errors are not \"no peers\", and prune" do
    test "prune: true disconnects a node only after an authoritative answer drops it" do
      srv = [
        {"_app._tcp.service.consul", "web1.node.dc1.consul", 5011},
        {"_app._tcp.service.consul", "web2.node.dc1.consul", 5012}
      ]

      dns = dnsmasq(8764, srv)
      ns = Dnsmasq.nameserver(dns)
      {:ok, connected} = Agent.start_link(fn -> [] end)

      # The stand-in list_nodes reports what was connected so far.

      strategy(
        ns,
        [query: "_app._tcp.service.consul", prune: true, poll_interval: 150, timeout: 100],
        connected
      )

      both = [:"app-5011@web1.node.dc1.consul", :"app-5012@web2.node.dc1.consul"]
      assert connects() == both
      Agent.update(connected, fn _ -> both end)

      # The nameserver dies: several polls fail (timeout), nothing is pruned.
      Dnsmasq.stop(dns)
      Process.sleep(1_000)
      refute_received {:disconnect, _}

      # It comes back without web2: web2 is pruned, web1 is not.
      dns = dnsmasq(8764, [hd(srv)])
      assert_receive {:disconnect, :"app-5012@web2.node.dc1.consul"}, 5_000
      Process.sleep(500)
      refute_received {:disconnect, :"app-5011@web1.node.dc1.consul"}

      # NXDOMAIN (the service is gone) is authoritative: web1 goes too.
      Dnsmasq.stop(dns)
      dnsmasq(8764, [])
      assert_receive {:disconnect, :"app-5011@web1.node.dc1.consul"}, 5_000
    end

    test "prune: false (the default) never disconnects" do
      dns = dnsmasq(8765, [{"_app._tcp.service.consul", "web1.node.dc1.consul", 5013}])

      strategy(Dnsmasq.nameserver(dns), [query: "_app._tcp.service.consul"], [
        :"app-5013@web1.node.dc1.consul"
      ])

      Dnsmasq.stop(dns)
      dnsmasq(8765, [])
      Process.sleep(800)
      refute_received {:disconnect, _}
    end

    test "nodes DNS never listed are never pruned" do
      dns = dnsmasq(8766, [{"_app._tcp.service.consul", "web1.node.dc1.consul", 5014}])

      strategy(Dnsmasq.nameserver(dns), [query: "_app._tcp.service.consul", prune: true], [
        :"rem-1a2b-app-5014@web1.node.dc1.consul",
        :"other-5099@elsewhere"
      ])

      assert_receive {:connect, :"app-5014@web1.node.dc1.consul"}, 3_000
      Process.sleep(600)
      refute_received {:disconnect, _}
    end

    test "with one of two queries failing, nothing is pruned" do
      dns = dnsmasq(8767, [{"_app._tcp.service.consul", "web1.node.dc1.consul", 5015}])
      ns = Dnsmasq.nameserver(dns)

      strategy(
        ns,
        [query: ["_app._tcp.service.consul", "_other._tcp.example.org"], prune: true],
        [:"app-5016@web2.node.dc1.consul"]
      )

      # dnsmasq REFUSES example.org (not local): unknown, so web2, which the
      # strategy has not seen yet anyway, stays; web1 is still connected.
      assert_receive {:connect, :"app-5015@web1.node.dc1.consul"}, 3_000
      Process.sleep(600)
      refute_received {:disconnect, _}
    end
  end

  describe "connect fast, never stall" do
    test "the first lookup does not block start_link, and a slow peer does not delay polls" do
      dns =
        dnsmasq(8768, [
          {"_app._tcp.service.consul", "slow.node.dc1.consul", 5021},
          {"_app._tcp.service.consul", "fast.node.dc1.consul", 5022}
        ])

      test_pid = self()
      ref = make_ref()

      handler = fn event, _measurements, meta, _ ->
        send(test_pid, {ref, event, meta[:query] || meta[:node]})
      end

      Caravan.Test.Telemetry.attach(handler)
      on_exit(&Caravan.Test.Telemetry.detach/0)

      config = [
        query: "_app._tcp.service.consul",
        nameservers: [Dnsmasq.nameserver(dns)],
        node_sname: "app",
        poll_interval: 100,
        connect_timeout: 10_000,
        connect: {__MODULE__, :slow_connect, [test_pid]},
        list_nodes: {Caravan.Test.Topology, :connected, [[]]}
      ]

      {:ok, pid} = DnsStrategy.start_link(config)
      on_exit(fn -> Process.exit(pid, :kill) end)

      # start_link returned before the first lookup was answered.
      refute_received {^ref, [:caravan, :lookup], _}
      assert_receive {:connect, :"app-5022@fast.node.dc1.consul"}, 3_000
      assert_receive {:connecting, :"app-5021@slow.node.dc1.consul"}, 3_000

      # The slow connect hangs for 10 s; meanwhile the polls go on (before
      # connects left the poll process, a poll waited for its connects and
      # the next ones were skipped), the fast node was not made to wait,
      # and the slow node is not connected twice at once.
      for _ <- 1..3,
          do: assert_receive({^ref, [:caravan, :lookup], "_app._tcp.service.consul"}, 2_000)

      refute_received {:connect, :"app-5021@slow.node.dc1.consul"}
      refute_received {:connecting, :"app-5021@slow.node.dc1.consul"}
      assert_receive {^ref, [:caravan, :connect], :"app-5022@fast.node.dc1.consul"}
    end
  end

  def slow_connect(test_pid, :"app-5021@slow.node.dc1.consul" = node) do
    send(test_pid, {:connecting, node})
    Process.sleep(10_000)
    send(test_pid, {:connect, node})
    true
  end

  def slow_connect(test_pid, node) do
    send(test_pid, {:connect, node})
    true
  end
end
