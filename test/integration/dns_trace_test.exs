defmodule Caravan.DNSTraceTest do
  # The tracing events of a lookup (hickory's and Caravan's own, collected
  # by native/caravan_core/src/trace.rs) reach Logger at debug, and only
  # when Caravan.DNS's module level is set to :debug. The DNS server is
  # real: Caravan.Test.FaultDns (on :inet_dns) on a loopback address of its
  # own (Caravan.Test.Loopback), answering UDP with TC set and the records
  # over TCP. Not async: the tests change Logger's level.
  use ExUnit.Case, async: false

  @moduletag :integration

  import ExUnit.CaptureLog
  alias Caravan.Test.{FaultDns, Loopback}

  @query "_app._tcp.service.consul"

  setup do
    ip = Loopback.ip()
    server = start_supervised!({FaultDns, ip: ip, port: 8790, mode: {:truncate, :full}})

    level = Logger.level()

    on_exit(fn ->
      Logger.configure(level: level)
      Logger.delete_module_level(Caravan.DNS)
    end)

    %{ns: FaultDns.nameserver(server), server: server, ip: to_string(:inet.ntoa(ip))}
  end

  test "at debug, a truncated answer's switch to TCP is in the log", %{ns: ns, ip: ip} do
    Logger.put_module_level(Caravan.DNS, :debug)

    log =
      capture_log([level: :debug], fn ->
        assert {:ok, [_ | _]} = Caravan.DNS.lookup_srv(@query, nameservers: [ns], timeout: 2_000)
      end)

    assert log =~ ~s([caravan] lookup of "#{@query}": )
    # Caravan's own events: the lookup with its nameservers, and its end.
    assert log =~ "caravan_core::resolver: SRV lookup"
    assert log =~ "#{ip}:8790"
    assert log =~ "SRV lookup answered"
    # hickory's: the truncated UDP answer retried over TCP.
    assert log =~ "truncated response received, retrying over TCP"
  end

  test "a failed lookup's trace names the failure", %{ns: ns, server: server} do
    Logger.put_module_level(Caravan.DNS, :debug)
    :ok = FaultDns.set_mode(server, :servfail)

    log =
      capture_log([level: :debug], fn ->
        assert {:error, {:server_failure, _}} =
                 Caravan.DNS.lookup_srv(@query, nameservers: [ns], timeout: 2_000)
      end)

    assert log =~ "SRV lookup failed: the nameserver answered"
    assert log =~ "kind=server_failure"
  end

  test "the reply carries the trace only when asked, and the native call says so", %{ns: ns} do
    {:ok, [parsed]} = Caravan.DNS.Options.parse(ns)
    {:ok, plain} = Caravan.Native.srv_lookup(@query, [parsed], 2_000, :auto, false)
    assert_receive {:caravan_srv, ^plain, {:ok, [_ | _]}}, 5_000

    {:ok, traced} = Caravan.Native.srv_lookup(@query, [parsed], 2_000, :auto, true)
    assert_receive {:caravan_srv, ^traced, {:ok, [_ | _]}, lines}, 5_000
    assert Enum.any?(lines, &(&1 =~ "retrying over TCP"))
    assert Enum.all?(lines, &is_binary/1)
  end

  test "above debug, lookups are not traced and log nothing", %{ns: ns} do
    Logger.configure(level: :info)

    log =
      capture_log([level: :debug], fn ->
        assert {:ok, [_ | _]} = Caravan.DNS.lookup_srv(@query, nameservers: [ns], timeout: 2_000)
      end)

    refute log =~ "trace"
    refute log =~ "[caravan]"
  end

  test "a primary level of :debug (a fresh app's) traces nothing", %{ns: ns} do
    Logger.configure(level: :debug)

    log =
      capture_log([level: :debug], fn ->
        assert {:ok, [_ | _]} = Caravan.DNS.lookup_srv(@query, nameservers: [ns], timeout: 2_000)
      end)

    refute log =~ "trace"
  end

  test "a module level turns on the traces alone", %{ns: ns} do
    Logger.configure(level: :info)
    Logger.put_module_level(Caravan.DNS, :debug)
    on_exit(fn -> Logger.delete_module_level(Caravan.DNS) end)

    log =
      capture_log([level: :debug], fn ->
        assert {:ok, [_ | _]} = Caravan.DNS.lookup_srv(@query, nameservers: [ns], timeout: 2_000)
      end)

    assert log =~ "retrying over TCP"
  end
end
