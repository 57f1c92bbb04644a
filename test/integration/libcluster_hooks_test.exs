defmodule Caravan.Cluster.LibclusterTest do
  # libcluster's own connect/disconnect path. The real libcluster is on
  # hex.pm, which is not reachable here: these tests load a STAND-IN written
  # from libcluster 3.5.0's documented contract and source
  # (test/libcluster_standin/cluster_strategy.ex; it raises on unexpected
  # connect results and unexported MFAs, as the real one does). It is loaded
  # only here and purged after each test, so every other test runs without
  # Cluster.Strategy. Against a real dnsmasq on 127.0.9.1; the connect,
  # disconnect and list_nodes MFAs are the recorders of Caravan.Test.Topology
  # (this test VM is not distributed); real nodes are in
  # Caravan.LibclusterNodesTest.
  use ExUnit.Case, async: false

  @moduletag :integration

  import ExUnit.CaptureLog
  import Caravan.Test.Topology, only: [state: 3]
  alias Caravan.Cluster.DnsStrategy
  alias Caravan.Test.{Dnsmasq, Libcluster}

  @listen "127.0.9.1"
  @srv [
    {"_app._tcp.service.consul", "web1.node.dc1.consul", 4370},
    {"_app._tcp.service.consul", "web2.node.dc1.consul", 4371},
    {"_app._tcp.service.consul", "web3.node.dc1.consul", 4372}
  ]
  @nodes [
    :"app-4370@web1.node.dc1.consul",
    :"app-4371@web2.node.dc1.consul",
    :"app-4372@web3.node.dc1.consul"
  ]

  defp dnsmasq(port, srv) do
    dns = Dnsmasq.start(listen: @listen, port: port, srv: srv)
    on_exit(fn -> Dnsmasq.stop(dns) end)
    dns
  end

  defp config(dns, extra),
    do:
      Keyword.merge(
        [
          query: "_app._tcp.service.consul",
          node_sname: "app",
          nameservers: [Dnsmasq.nameserver(dns)],
          poll_interval: 60_000
        ],
        extra
      )

  setup do
    test_pid = self()

    Caravan.Test.Telemetry.attach(fn event, measurements, metadata, _ ->
      send(test_pid, {:event, event, measurements, metadata})
    end)

    on_exit(fn ->
      Caravan.Test.Telemetry.detach()
      Application.delete_env(:libcluster, :debug)
    end)
  end

  describe "with libcluster loaded (stand-in)" do
    setup do
      :ok = Libcluster.load()
      on_exit(&Libcluster.unload/0)
      trace_libcluster()
    end

    test "every connect is one Cluster.Strategy.connect_nodes/4 call, with its logs and events" do
      dns = dnsmasq(8790, @srv)

      log =
        capture_log([level: :info], fn ->
          start_supervised!({DnsStrategy, [state(config(dns, []), self(), [])]})

          for node <- @nodes do
            # libcluster called the connect MFA...
            assert_receive {:connect, ^node}, 5_000

            # ...through connect_nodes/4, with this one node and the
            # topology's MFAs...
            assert_receive {:trace, _pid, :call,
                            {Cluster.Strategy, :connect_nodes,
                             [
                               :test,
                               {Caravan.Test.Topology, :record_connect, [_]},
                               {Caravan.Test.Topology, :connected, [[]]},
                               [^node]
                             ]}},
                           5_000

            # ...and reported it as for its own strategies.
            assert_receive {:event, [:libcluster, :connect_node, :ok], %{duration: d},
                            %{node: ^node, topology: :test}},
                           5_000

            assert is_integer(d)
            assert_receive {:event, [:caravan, :connect], _, %{node: ^node, result: :ok}}, 5_000
          end

          # One call per connect: no batch, no repeat.
          refute_received {:trace, _, :call, {Cluster.Strategy, :connect_nodes, _}}
          Process.sleep(200)
        end)

      for node <- @nodes do
        assert log =~ "[info] [libcluster:test] connected to #{inspect(node)}"
        # Caravan's own line is debug under libcluster (no doubled info line).
        refute log =~ "[info] [caravan] topology test: connected to #{node}"
      end
    end

    test "every prune is one Cluster.Strategy.disconnect_nodes/4 call, with its logs and events" do
      dns = dnsmasq(8791, @srv)
      {:ok, connected} = Agent.start_link(fn -> [] end)
      [web1, web2, web3] = @nodes

      log =
        capture_log([level: :info], fn ->
          start_supervised!(
            {DnsStrategy,
             [
               state(
                 config(dns, prune: true, poll_interval: 150, timeout: 100),
                 self(),
                 connected
               )
             ]}
          )

          for node <- @nodes, do: assert_receive({:connect, ^node}, 5_000)
          Agent.update(connected, fn _ -> @nodes end)

          # DNS drops web3 (dnsmasq's records change by restart).
          Dnsmasq.stop(dns)
          dnsmasq(8791, Enum.take(@srv, 2))

          assert_receive {:disconnect, ^web3}, 5_000

          assert_receive {:trace, _pid, :call,
                          {Cluster.Strategy, :disconnect_nodes,
                           [
                             :test,
                             {Caravan.Test.Topology, :record_disconnect, [_]},
                             {Caravan.Test.Topology, :connected, [^connected]},
                             [^web3]
                           ]}},
                         5_000

          assert_receive {:event, [:libcluster, :disconnect_node, :ok], %{duration: _},
                          %{node: ^web3, topology: :test}},
                         5_000

          assert_receive {:event, [:caravan, :disconnect], _, %{node: ^web3, reason: :pruned}}
          Agent.update(connected, fn _ -> [web1, web2] end)
          Process.sleep(500)
        end)

      refute_received {:disconnect, _}
      refute_received {:trace, _, :call, {Cluster.Strategy, :disconnect_nodes, _}}
      assert log =~ "[info] [libcluster:test] disconnected from #{inspect(web3)}"
      # The stand-in nodes cannot leave when asked (Caravan.Cluster.Membership):
      # after leave_after requests the strategy disconnects web3 itself.
      assert log =~ "[caravan] topology test: asked #{web3} to leave"
      assert log =~ "[caravan] topology test: #{web3}, which DNS no longer lists, did not leave"
    end

    test "failed connects are libcluster's failures, and a contract breach does not crash" do
      dns = dnsmasq(8792, Enum.take(@srv, 2))
      [web1, web2] = Enum.take(@nodes, 2)
      test_pid = self()

      state = %{
        state(config(dns, poll_interval: 200), test_pid, [])
        | connect: {__MODULE__, :refusing_connect, [test_pid]}
      }

      log =
        capture_log([level: :info], fn ->
          pid = start_supervised!({DnsStrategy, [state]})

          # false: libcluster's :unreachable once per streak (its retries
          # call the MFA directly, so libcluster logs no line per poll);
          # Caravan's warning once.
          assert_receive {:event, [:libcluster, :connect_node, :error], %{},
                          %{node: ^web1, topology: :test, reason: :unreachable}},
                         5_000

          for _retry <- 1..2,
              do:
                assert_receive(
                  {:event, [:caravan, :connect], _, %{node: ^web1, result: :error}},
                  5_000
                )

          refute_received {:event, [:libcluster, :connect_node, :error], %{}, %{node: ^web1}}

          # {:error, :nope} is outside libcluster's contract: it raises, the
          # connect process reports it, the strategy lives on.
          assert_receive {:event, [:caravan, :connect], _,
                          %{node: ^web2, result: :error, reason: {:raised, banner}}},
                         5_000

          assert banner =~ "CaseClauseError"
          assert Process.alive?(pid)
        end)

      assert log =~ "[warning] [libcluster:test] unable to connect to #{inspect(web1)}"

      assert [_] =
               Regex.scan(
                 ~r/\[warning\] \[caravan\] topology test: cannot connect to #{web1}/,
                 log
               )

      assert log =~ "[warning] [caravan] topology test: cannot connect to #{web2}: {:raised,"
    end

    test "debug lines follow `config :libcluster, debug: true`, as libcluster's strategies' do" do
      dns = dnsmasq(8793, @srv)
      line = "[debug] [caravan] topology test: DNS lists 3 node(s)"

      quiet =
        capture_log([level: :debug], fn ->
          start_supervised!({DnsStrategy, [state(config(dns, []), self(), @nodes)]})
          assert_receive {:event, [:caravan, :lookup], _, %{result: :ok}}, 5_000
          Process.sleep(100)
        end)

      refute quiet =~ line
      stop_supervised!(:test)
      Application.put_env(:libcluster, :debug, true)

      verbose =
        capture_log([level: :debug], fn ->
          start_supervised!({DnsStrategy, [state(config(dns, []), self(), @nodes)]})
          assert_receive {:event, [:caravan, :lookup], _, %{result: :ok}}, 5_000
          Process.sleep(100)
        end)

      assert verbose =~ line
    end
  end

  describe "without libcluster" do
    test "nothing changes: Caravan calls the MFAs, libcluster reports nothing" do
      refute Code.ensure_loaded?(Cluster.Strategy)
      dns = dnsmasq(8794, @srv)

      log =
        capture_log([level: :debug], fn ->
          start_supervised!({DnsStrategy, [state(config(dns, []), self(), [])]})

          for node <- @nodes do
            assert_receive {:connect, ^node}, 5_000
            assert_receive {:event, [:caravan, :connect], _, %{node: ^node, result: :ok}}, 5_000
          end

          Process.sleep(200)
        end)

      refute_received {:event, [:libcluster | _], _, _}
      refute log =~ "[libcluster:"
      # Caravan's own info line, and its debug lines without any :libcluster config.
      for node <- @nodes,
          do: assert(log =~ "[info] [caravan] topology test: connected to #{node}")

      assert log =~ "[debug] [caravan] topology test: DNS lists 3 node(s)"
    end
  end

  describe "whether libcluster is there (Caravan.Cluster.Libcluster.available?/0)" do
    # The stand-in's object code in a directory of the code path, not
    # loaded: what a VM in interactive mode has when libcluster is a
    # dependency whose modules are not loaded yet.
    setup do
      dir =
        Path.join(System.tmp_dir!(), "caravan-libcluster-#{System.unique_integer([:positive])}")

      File.mkdir_p!(dir)

      for {module, binary} <- Libcluster.compile(),
          do: File.write!(Path.join(dir, "#{module}.beam"), binary)

      true = :code.add_patha(String.to_charlist(dir))

      on_exit(fn ->
        :code.del_path(String.to_charlist(dir))
        Libcluster.unload()
        :application.unload(:libcluster)
        File.rm_rf!(dir)
      end)
    end

    test "a Cluster.Strategy on the code path is not looked for without a :libcluster application" do
      refute Caravan.Cluster.Libcluster.available?()
      # Not searched for, so not loaded (a code-path search would have).
      refute :code.is_loaded(Cluster.Strategy)
    end

    test "with the :libcluster application loaded, Cluster.Strategy is loaded and used" do
      :ok = :application.load({:application, :libcluster, [vsn: ~c"3.5.0", modules: []]})
      assert Caravan.Cluster.Libcluster.available?()
      assert {:file, _} = :code.is_loaded(Cluster.Strategy)
    end
  end

  @doc false
  # A connect MFA: false for web1 (unreachable), a value outside
  # libcluster's contract for the rest.
  def refusing_connect(test_pid, node) do
    send(test_pid, {:connect, node})
    if node == :"app-4370@web1.node.dc1.consul", do: false, else: {:error, :nope}
  end

  # Traces every call into Cluster.Strategy from processes started from now
  # on (the strategy and its connect processes), to this test process.
  defp trace_libcluster do
    assert :erlang.trace_pattern({Cluster.Strategy, :_, :_}, true, [:global]) > 0
    :erlang.trace(:new_processes, true, [:call, {:tracer, self()}])

    on_exit(fn ->
      :erlang.trace(:all, false, [:call])
      :erlang.trace_pattern({:_, :_, :_}, false, [:global])
    end)

    :ok
  end
end
