defmodule Caravan.ObservabilityTest do
  # Telemetry events, log levels and the two Mix tasks, against a real
  # dnsmasq on port 8770 of a loopback address from Caravan.Test.Loopback.
  # The :telemetry library cannot be installed here (no hex):
  # test/support/telemetry.ex is a double of its execute/3. Not async: the
  # double's handler and the log levels are global.
  use ExUnit.Case, async: false

  @moduletag :integration

  import ExUnit.CaptureIO
  import ExUnit.CaptureLog
  import Caravan.Test.Topology, only: [state: 3]
  alias Caravan.Cluster.DnsStrategy
  alias Caravan.Test.{Dnsmasq, Loopback}

  setup_all do
    dns =
      Dnsmasq.start(
        listen: Loopback.address(),
        port: 8770,
        srv: [
          {"_app._tcp.service.consul", "web1.node.dc1.consul", 5031},
          {"_app._tcp.service.consul", "7f000421.addr.dc1.consul", 5032},
          {"_app._tcp.service.consul", "bad_host.node.dc1.consul", 0}
        ],
        hosts: [{"web1.node.dc1.consul", "127.0.4.31"}]
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)
    %{ns: Dnsmasq.nameserver(dns)}
  end

  setup do
    test_pid = self()

    Caravan.Test.Telemetry.attach(fn event, m, meta, _ ->
      send(test_pid, {:event, event, m, meta})
    end)

    on_exit(&Caravan.Test.Telemetry.detach/0)
  end

  describe "telemetry" do
    test "lookups, connects and prunes are reported", %{ns: ns} do
      config = [
        query: ["_app._tcp.service.consul", "_none._tcp.service.consul"],
        node_sname: "app",
        nameservers: [ns],
        poll_interval: 60_000
      ]

      capture_log(fn ->
        start_supervised!({DnsStrategy, [state(config, self(), [])]})

        assert_receive {:event, [:caravan, :lookup], %{duration: d, records: 3},
                        %{topology: :test, query: "_app._tcp.service.consul", result: :ok}},
                       3_000

        assert is_integer(d) and d > 0

        # NXDOMAIN: an authoritative "no instances", so :ok with 0 records.
        assert_receive {:event, [:caravan, :lookup], %{records: 0},
                        %{query: "_none._tcp.service.consul", result: :ok}},
                       3_000

        for node <- [:"app-5031@web1.node.dc1.consul", :"app-5032@127.0.4.33"] do
          assert_receive {:event, [:caravan, :connect], %{duration: _},
                          %{node: ^node, result: :ok, topology: :test}},
                         3_000
        end
      end)
    end

    test "a failed lookup is reported with its reason" do
      config = [
        query: "_app._tcp.service.consul",
        node_sname: "app",
        # Nothing listens here.
        nameservers: [Loopback.address() <> ":8771"],
        timeout: 200,
        poll_interval: 60_000
      ]

      capture_log(fn ->
        start_supervised!({DnsStrategy, [state(config, self(), [])]})

        assert_receive {:event, [:caravan, :lookup], %{records: 0},
                        %{result: :error, reason: {kind, _}}},
                       3_000

        assert kind in [:timeout, :transport]
      end)
    end

    test "without the telemetry library loaded, execute/3 is a no-op" do
      double = Caravan.Test.TelemetryDouble
      :code.purge(double)
      true = :code.delete(double)
      on_exit(fn -> Code.ensure_loaded(double) end)
      refute :erlang.module_loaded(double)

      assert :ok = Caravan.Telemetry.execute([:caravan, :lookup], %{}, %{})
      refute_received {:event, _, _, _}
      refute :erlang.module_loaded(double)
    end
  end

  describe "logs" do
    test "a healthy, unchanged cluster logs nothing above debug after it formed", %{ns: ns} do
      {:ok, connected} = Agent.start_link(fn -> [] end)

      config = [
        query: "_app._tcp.service.consul",
        node_sname: "app",
        nameservers: [ns],
        poll_interval: 100
      ]

      log =
        capture_log([level: :info], fn ->
          start_supervised!({DnsStrategy, [state(config, self(), connected)]})
          assert_receive {:connect, :"app-5031@web1.node.dc1.consul"}, 3_000
          assert_receive {:connect, :"app-5032@127.0.4.33"}, 3_000

          Agent.update(connected, fn _ ->
            [:"app-5031@web1.node.dc1.consul", :"app-5032@127.0.4.33"]
          end)

          # Many polls of the same answer.
          Process.sleep(1_000)
        end)

      lines = log |> String.split("\n") |> Enum.filter(&(&1 =~ ~r/\[(info|warning|error)\]/))
      # Formation: two connects at info, the skipped record (port 0) once,
      # and, once at start (not per poll), that this test VM is not
      # distributed.
      assert Enum.count(lines, &(&1 =~ "connected to")) == 2
      assert [not_distributed, skipped] = Enum.filter(lines, &(&1 =~ "[warning]"))

      assert not_distributed =~
               "[caravan] topology test: this node is not distributed (started without -name"

      assert skipped =~ "[caravan] topology test: skipped SRV records"
      assert skipped =~ "bad_host.node.dc1.consul"
      assert length(lines) == 4, Enum.join(lines, "\n")
    end
  end

  describe "mix caravan.lookup and mix caravan.port" do
    test "lookup prints records, addresses and node names", %{ns: ns} do
      out =
        capture_io(fn ->
          Mix.Tasks.Caravan.Lookup.run(["_app._tcp.service.consul", "--nameserver", ns])
        end)

      assert out =~ ~r/^PRIO\s+WEIGHT\s+PORT\s+TARGET\s+ADDRESSES\s+NODE$/m

      assert out =~
               ~r/5031\s+web1\.node\.dc1\.consul\s+127\.0\.4\.31\s+app-5031@web1\.node\.dc1\.consul/

      assert out =~ ~r/5032\s+7f000421\.addr\.dc1\.consul\s+-\s+app-5032@127\.0\.4\.33/
      assert out =~ ~r/0\s+bad_host\.node\.dc1\.consul\s+-\s+skipped \(/

      out =
        capture_io(fn ->
          Mix.Tasks.Caravan.Lookup.run([
            "_app._tcp.service.consul",
            "--nameserver",
            ns,
            "--node-host",
            "ip",
            "--node-sname",
            "web"
          ])
        end)

      assert out =~ "web-5031@127.0.4.31"
    end

    test "lookup fails with the typed error", %{ns: ns} do
      assert_raise Mix.Error, ~r/nxdomain/, fn ->
        Mix.Tasks.Caravan.Lookup.run(["_nope._tcp.service.consul", "--nameserver", ns])
      end

      assert_raise Mix.Error, ~r/invalid_nameserver.*consul:8600/, fn ->
        Mix.Tasks.Caravan.Lookup.run(["_app._tcp.service.consul", "--nameserver", "consul:8600"])
      end

      assert_raise Mix.Error, ~r/usage/, fn -> Mix.Tasks.Caravan.Lookup.run([]) end
    end

    test "port prints the port from a node name" do
      assert capture_io(fn -> Mix.Tasks.Caravan.Port.run(["app-4834@web1.node.dc1.consul"]) end) ==
               "4834\n"

      assert capture_io(fn -> Mix.Tasks.Caravan.Port.run(["app@host"]) end) == "4370\n"

      assert capture_io(fn -> Mix.Tasks.Caravan.Port.run(["rpc-1a2b-app-4834@h"]) end) =~
               "random port"

      assert_raise Mix.Error, ~r/port_out_of_range.*app-70000@h/, fn ->
        Mix.Tasks.Caravan.Port.run(["app-70000@h"])
      end
    end
  end
end
