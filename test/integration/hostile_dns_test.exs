defmodule Caravan.HostileDnsTest do
  # A hostile or broken DNS (Caravan.Test.FaultDns, a server built on OTP's
  # :inet_dns, on ports 8720-8722 of loopback addresses from
  # Caravan.Test.Loopback). For each fault:
  #   (a) Caravan.DNS.lookup_srv ends within its bound with a typed error or
  #       a filtered answer;
  #   (b) the strategy, with prune: true, keeps the cluster: no disconnect,
  #       still alive after several polls through every fault;
  #   (c) nothing blocks a scheduler: a system monitor watches for long
  #       schedules in Caravan's code meanwhile.
  # Not async: the system monitor is one per VM, and the strategy's test
  # double finds the test under a registered name.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Cluster.DnsStrategy
  alias Caravan.Test.{FaultDns, Loopback, Topology}

  @query "_app._tcp.service.consul"
  # The lookup bound used throughout, and how long past it a reply may come:
  # a generous grace for a loaded machine; a hung lookup never comes.
  @bound 600
  @grace 1_500

  @web1 :"app-4801@web1.node.dc1.consul"
  @web2 :"app-4802@web2.node.dc1.consul"

  # {mode, expected answer of lookup_srv}: {:error, kind}, or {:ok, check}
  # with check a function of the records.
  defp faults do
    [
      {:silent, {:error, :timeout}},
      {{:delay, 5_000}, {:error, :timeout}},
      {{:delay, 100}, {:ok, &(length(&1) == 2)}},
      {:servfail, {:error, :server_failure}},
      {:refused, {:error, :server_failure}},
      {{:truncate, :full}, {:ok, &(length(&1) == 2)}},
      {{:truncate, :dead}, {:error, :transport}},
      {{:malformed, :garbage}, {:error, :transport}},
      {{:malformed, :short}, {:error, :transport}},
      {{:malformed, :missing_records}, {:error, :transport}},
      {{:malformed, :label_too_long}, {:error, :transport}},
      {{:malformed, :pointer_loop}, {:error, :transport}},
      {:wrong_id, {:error, :timeout}},
      {{:records, 2_000}, {:ok, &(length(&1) == 2_000)}},
      {:bad_targets, {:ok, &bad_targets_come_back_escaped/1}},
      {:edge_ports, {:ok, &(Enum.map(&1, fn r -> r.port end) == [4801, 4802, 0, 1, 65_535])}},
      {:cname_self, {:error, :cname_loop}},
      {:cname_loop, {:error, :cname_loop}}
    ]
  end

  setup do
    # Long schedules in Caravan's code, watched for the whole test. 50 ms:
    # a NIF or a receive that blocked on a fault would hold its scheduler
    # for the fault's whole duration (the 600 ms bound, or longer), while
    # OS preemption on this shared 2-core machine can stretch an ordinary
    # time slice by a few ms; only Caravan's own functions count (the
    # fixture's :inet_dns encoding of 2000 records is not Caravan's).
    # The events go to a collector: the system monitor process itself is
    # not monitored, and the test process makes lookups too.
    collector = spawn_link(fn -> collect([]) end)
    Process.put(:long_schedule_collector, collector)
    previous = :erlang.system_monitor(collector, [{:long_schedule, 50}])

    on_exit(fn ->
      case previous do
        :undefined -> :erlang.system_monitor(:undefined)
        {pid, options} -> :erlang.system_monitor(pid, options)
      end
    end)

    :ok
  end

  test "each fault ends the lookup within its bound, with a typed error or a filtered answer" do
    server = start_supervised!({FaultDns, ip: Loopback.ip(), port: 8720})
    ns = FaultDns.nameserver(server)

    for {mode, expected} <- faults() do
      :ok = FaultDns.set_mode(server, mode)
      before = FaultDns.queries(server)
      started = System.monotonic_time(:millisecond)
      {:ok, ref} = Caravan.DNS.lookup_srv_async(@query, nameservers: [ns], timeout: @bound)

      # The native reply itself must come: no Elixir-side timeout here.
      answer =
        receive do
          {:caravan_srv, ^ref, answer} -> answer
        after
          @bound + @grace -> flunk("#{inspect(mode)}: no reply within #{@bound} + #{@grace} ms")
        end

      elapsed = System.monotonic_time(:millisecond) - started
      label = "#{inspect(mode)} after #{elapsed} ms: #{inspect(answer, limit: 5)}"

      case expected do
        {:error, kind} ->
          assert {:error, {^kind, message}} = answer, label
          assert is_binary(message)

        {:ok, check} ->
          assert {:ok, records} = answer, label
          assert check.(records), label
      end

      # Over UDP, or straight over TCP after an answer that needed TCP
      # (the {:records, 2_000} mode's), but asked.
      now = FaultDns.queries(server)
      assert now.udp + now.tcp > before.udp + before.tcp, "#{inspect(mode)} was never asked"
    end

    # Truncation was retried over TCP.
    assert FaultDns.queries(server).tcp > 0
    refute_long_schedules()
  end

  test "a CNAME chain that ends in an existing name with no records is still NODATA" do
    # The control for :cname_self and :cname_loop: only a loop is an error.
    server = start_supervised!({FaultDns, ip: Loopback.ip(), port: 8721, mode: :cname_chain})

    assert {:error, {:nodata, _}} =
             Caravan.DNS.lookup_srv(@query,
               nameservers: [FaultDns.nameserver(server)],
               timeout: @bound
             )

    assert Caravan.DnsClient.Native.get_nodes(@query,
             nameservers: [FaultDns.nameserver(server)],
             timeout: @bound
           ) == {:ok, []}
  end

  test "with prune: true the strategy keeps the cluster through every fault" do
    server = start_supervised!({FaultDns, ip: Loopback.ip(), port: 8722})
    {:ok, connected} = Agent.start_link(fn -> [] end)

    config = [
      query: @query,
      node_sname: "app",
      nameservers: [FaultDns.nameserver(server)],
      poll_interval: 150,
      timeout: 400,
      prune: true,
      dns_client: __MODULE__.ReportingClient
    ]

    Process.register(self(), __MODULE__)
    strategy = start_supervised!({DnsStrategy, [Topology.state(config, self(), connected)]})

    # The cluster: web1 and web2, found in DNS and connected.
    assert_receive {:connect, @web1}, 5_000
    assert_receive {:connect, @web2}, 5_000
    Agent.update(connected, fn _ -> [@web1, @web2] end)
    await_polls(2)

    for {mode, _} <- faults() do
      :ok = FaultDns.set_mode(server, mode)
      # Three polls under the fault (the first may have started before it).
      await_polls(3, mode)
      assert Process.alive?(strategy), "the strategy died under #{inspect(mode)}"
      refute_received {:disconnect, _}, "#{inspect(mode)} disconnected a node"
    end

    # Invalid targets and port 0 were skipped; the valid records of the
    # filtered answers were connected (65535 is a valid port).
    refute_received {:connect, :"app-0@zero.node.dc1.consul"}
    refute_received {:connect, :"app-4811@we_b.node.consul"}
    refute_received {:connect, :"app-4815@."}
    assert_received {:connect, :"app-1@one.node.dc1.consul"}
    assert_received {:connect, :"app-65535@max.node.dc1.consul"}

    # The control: an authoritative answer without web2 does prune it, so
    # the recorder above would have seen a disconnect had a fault caused one.
    :ok = FaultDns.set_records(server, [{1, 1, 4801, "web1.node.dc1.consul"}])
    :ok = FaultDns.set_mode(server, :normal)
    assert_receive {:disconnect, @web2}, 5_000
    refute_received {:disconnect, @web1}

    refute_long_schedules()
  end

  defmodule ReportingClient do
    @moduledoc false
    # Caravan's native client, unchanged, that also tells the test when a
    # poll's lookup has finished, so the test can count polls.
    @behaviour Caravan.DnsClient

    @impl true
    def get_nodes(query), do: get_nodes(query, [])

    @impl true
    def get_nodes(query, opts) do
      result = Caravan.DnsClient.Native.get_nodes(query, opts)
      if pid = Process.whereis(Caravan.HostileDnsTest), do: send(pid, {:polled, result})
      result
    end
  end

  # -- helpers ---------------------------------------------------------------

  defp await_polls(n, mode \\ :normal) do
    for _ <- 1..n do
      assert_receive {:polled, _}, 10_000, "no poll under #{inspect(mode)}"
    end
  end

  defp bad_targets_come_back_escaped(records) do
    targets = Enum.map(records, & &1.target)
    # hickory writes the bytes a host name cannot hold as escapes, so none
    # of them can pass for a host name.
    "web1.node.dc1.consul" in targets and "bad\\040host.consul" in targets and
      "a\\.b.node.consul" in targets and "w\\303\\251b.node.consul" in targets and
      "." in targets
  end

  defp refute_long_schedules do
    :erlang.system_monitor(:undefined)
    collector = Process.get(:long_schedule_collector)
    send(collector, {:events, self()})
    assert_receive {:long_schedules, all}, 5_000
    events = for {pid, info} <- all, caravan_code?(info), do: {pid, info}
    assert events == [], "long schedules in Caravan's code: #{inspect(events)}"
  end

  defp collect(events) do
    receive do
      {:monitor, pid, :long_schedule, info} -> collect([{pid, info} | events])
      {:events, to} -> send(to, {:long_schedules, Enum.reverse(events)})
    end
  end

  defp caravan_code?(info) do
    Enum.any?([info[:in], info[:out]], fn
      {module, _f, _a} ->
        name = Atom.to_string(module)

        String.starts_with?(name, "Elixir.Caravan.") and
          not String.starts_with?(name, "Elixir.Caravan.Test.")

      _ ->
        false
    end)
  end
end
