defmodule Caravan.Cluster.DnsStrategyTest do
  # The strategy against a real dnsmasq (127.0.0.1:8655). The topology's
  # connect/list_nodes MFAs are libcluster's hooks; here they point at
  # recorders in this module, so the test sees exactly which node names the
  # strategy connects to without being distributed. Real connects are in
  # Caravan.EndToEndTest.
  use ExUnit.Case, async: false

  @moduletag :integration

  import ExUnit.CaptureLog
  alias Caravan.Cluster.{Config, DnsStrategy}
  alias Caravan.Test.Dnsmasq

  # libcluster is not installable here (no hex): Caravan.Test.Topology
  # stands in for its %Cluster.Strategy.State{} and its connect hooks.
  import Caravan.Test.Topology, only: [state: 2, state: 3]

  # A Caravan 1.x style client: get_nodes/1 returning a plain list.
  defmodule ListClient do
    @behaviour Caravan.DnsClient
    @impl true
    def get_nodes("svc"), do: [{4370, "a.example"}, {4371, "b.example"}, {0, "bad.example"}]
  end

  defmodule RaisingClient do
    @behaviour Caravan.DnsClient
    @impl true
    def get_nodes(_), do: raise("boom")
  end

  # A client whose lookup waits until the test releases it: tells the
  # test process (in :persistent_term) {:lookup, pid} and blocks.
  defmodule GatedClient do
    @behaviour Caravan.DnsClient
    @impl true
    def get_nodes(query), do: get_nodes(query, [])

    @impl true
    def get_nodes(_query, _opts) do
      send(:persistent_term.get({__MODULE__, :test}), {:lookup, self()})

      receive do
        :release -> {:ok, []}
      end
    end
  end

  setup_all do
    dns =
      Dnsmasq.start(
        port: 8655,
        srv: [
          {"_app._tcp.service.consul", "web1.node.dc1.consul", 4370},
          {"_app._tcp.service.consul", "web2.node.dc1.consul", 4371},
          {"_app._tcp.service.consul", "web3.node.dc1.consul", 4372}
        ]
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)
    %{ns: Dnsmasq.nameserver(dns)}
  end

  defp app_config(ns),
    do: [
      query: "_app._tcp.service.consul",
      node_sname: "app",
      nameservers: [ns],
      poll_interval: 100
    ]

  test "started the way libcluster does, it connects to every SRV record's node", %{ns: ns} do
    config = app_config(ns)

    start_supervised!({DnsStrategy, [state(config, self())]})

    for n <- [
          "app-4370@web1.node.dc1.consul",
          "app-4371@web2.node.dc1.consul",
          "app-4372@web3.node.dc1.consul"
        ] do
      node = String.to_atom(n)
      assert_receive {:connect, ^node}, 5_000
    end
  end

  test "nodes already in list_nodes are not connected again", %{ns: ns} do
    config = app_config(ns)

    known = [:"app-4370@web1.node.dc1.consul", :"app-4371@web2.node.dc1.consul"]
    start_supervised!({DnsStrategy, [state(config, self(), known)]})

    assert_receive {:connect, :"app-4372@web3.node.dc1.consul"}, 5_000
    # Several polls later, still no connect to the known nodes.
    Process.sleep(350)
    refute_received {:connect, :"app-4370@web1.node.dc1.consul"}
    refute_received {:connect, :"app-4371@web2.node.dc1.consul"}
  end

  test "started without libcluster from a keyword list", %{ns: ns} do
    test_pid = self()

    start_supervised!(
      {DnsStrategy,
       query: "_app._tcp.service.consul",
       node_sname: "app",
       nameservers: [ns],
       connect: {Caravan.Test.Topology, :record_connect, [test_pid]},
       list_nodes: {Caravan.Test.Topology, :connected, [[]]}}
    )

    assert_receive {:connect, :"app-4370@web1.node.dc1.consul"}, 5_000
  end

  test "a dead nameserver (closed port: refused at once) changes nothing and is warned of once" do
    config = [
      query: "_app._tcp.service.consul",
      node_sname: "app",
      nameservers: ["127.0.0.1:8656"],
      poll_interval: 150,
      timeout: 100
    ]

    log =
      capture_log(fn ->
        pid = start_supervised!({DnsStrategy, [state(config, self(), [:"app-4370@x"])]})
        Process.sleep(1_000)
        assert Process.alive?(pid)
      end)

    refute_received {:connect, _}
    refute_received {:disconnect, _}

    assert length(
             Regex.scan(
               ~r/\[warning\] \[caravan\] topology test: lookup of .* failed \(transport: UDP to 127\.0\.0\.1:8656: connection refused/,
               log
             )
           ) ==
             1

    assert log =~ "keeping the cluster as it is"
  end

  test "a Caravan 1.x client returning a list works; invalid records are skipped with a warning" do
    config = [query: "svc", node_sname: "app", dns_client: ListClient, poll_interval: 100]

    log =
      capture_log(fn ->
        start_supervised!({DnsStrategy, [state(config, self())]})
        assert_receive {:connect, :"app-4370@a.example"}, 5_000
        assert_receive {:connect, :"app-4371@b.example"}, 5_000
        Process.sleep(250)
      end)

    refute_received {:connect, :"app-0@bad.example"}

    assert length(Regex.scan(~r/\[warning\] .*skipped SRV records: .*app-0@bad.example/, log)) ==
             1
  end

  test "a tick during a slow poll starts the next poll when that one ends, never beside it" do
    :persistent_term.put({GatedClient, :test}, self())
    on_exit(fn -> :persistent_term.erase({GatedClient, :test}) end)

    config = [
      query: "svc",
      node_sname: "app",
      dns_client: GatedClient,
      poll_interval: 3_000,
      timeout: 3_000
    ]

    capture_log(fn ->
      start_supervised!({DnsStrategy, [state(config, self())]})
      assert_receive {:lookup, first}, 5_000

      # The tick (at 2700 to 3300 ms: the interval give or take 10%)
      # comes while the first poll still runs: no lookup beside it.
      refute_receive {:lookup, _}, 4_000

      # Released at 4000 ms: the next poll starts now, not at the next
      # tick (5400 ms at the earliest): the tick was not skipped.
      send(first, :release)
      assert_receive {:lookup, second}, 1_000
      send(second, :release)
    end)
  end

  test "a client that raises does not stop the strategy" do
    config = [query: "svc", node_sname: "app", dns_client: RaisingClient, poll_interval: 100]

    log =
      capture_log(fn ->
        pid = start_supervised!({DnsStrategy, [state(config, self())]})
        Process.sleep(300)
        assert Process.alive?(pid)
      end)

    assert log =~ "boom"
    refute_received {:connect, _}
  end

  test "an invalid config logs an error and fails the start, naming the key" do
    Process.flag(:trap_exit, true)

    log =
      capture_log(fn ->
        assert {:error, {:invalid_config, "missing :query" <> _}} =
                 DnsStrategy.start_link([state([node_sname: "app"], self())])

        assert {:error, {:invalid_config, ~s(invalid :node_sname: "a.b") <> _}} =
                 DnsStrategy.start_link(query: "q", node_sname: "a.b")

        assert {:error, {:invalid_config, message}} =
                 DnsStrategy.start_link(query: "q", node_sname: "app", pol_interval: 1000)

        assert message =~ "unknown key :pol_interval; did you mean :poll_interval?"
      end)

    assert log =~ "missing :query"
    assert log =~ ~s(invalid :node_sname: "a.b")
    assert log =~ "unknown key :pol_interval; did you mean :poll_interval?"
  end

  describe "Config.new/1" do
    test "defaults" do
      assert {:ok, config} = Config.new(query: "q.consul", node_sname: "app")
      assert config.poll_interval == 5_000
      assert config.timeout == 2_000
      assert config.dns_client == Caravan.DnsClient.Native
      assert config.connect == {:net_kernel, :connect_node, []}
      assert config.list_nodes == {:erlang, :nodes, [:connected]}
    end

    test "1.x's :consul_service and {ip, port} nameservers" do
      assert {:ok, config} =
               Config.new(
                 consul_service: "s.consul",
                 node_sname: "app",
                 nameservers: [{"10.0.0.1", "8600"}]
               )

      assert config.queries == ["s.consul"]
      assert Enum.map(config.nameservers, &Caravan.DNS.Options.text/1) == ["10.0.0.1:8600"]
    end

    test "errors name the key, the value and what was expected" do
      assert {:error,
              {:invalid_option, "invalid :poll_interval: 0; expected a positive integer (ms)"}} =
               Config.new(query: "q", node_sname: "a", poll_interval: 0)

      assert {:error, {:invalid_option, "missing :node_sname" <> _}} = Config.new(query: "q")

      assert {:error, {:invalid_option, "invalid :dns_client: NoSuchModule" <> _}} =
               Config.new(query: "q", node_sname: "a", dns_client: NoSuchModule)

      assert {:error, {:invalid_option, "invalid :nameservers" <> _}} =
               Config.new(query: "q", node_sname: "a", nameservers: [:x])

      # Strings go through the same parser as the lookups, at init.
      assert {:error,
              {:invalid_option, "invalid :nameservers: invalid nameserver \"consul:8600\"" <> _}} =
               Config.new(query: "q", node_sname: "a", nameservers: ["consul:8600"])

      assert {:error, {:invalid_option, "invalid :query: []" <> _}} =
               Config.new(query: [], node_sname: "a")

      assert {:error, {:invalid_option, "invalid :query: [\"a\", 1]" <> _}} =
               Config.new(query: ["a", 1], node_sname: "a")

      assert {:error, {:invalid_option, "invalid :prune: 1; expected true or false"}} =
               Config.new(query: "q", node_sname: "a", prune: 1)

      assert {:error,
              {:invalid_option,
               "invalid :leave_after: 0; expected a positive integer (authoritative polls)"}} =
               Config.new(query: "q", node_sname: "a", leave_after: 0)

      assert {:ok, %Config{leave_after: 3}} = Config.new(query: "q", node_sname: "a")

      assert {:error,
              {:invalid_option, "invalid :node_host: :dns; expected :auto, :target or :ip"}} =
               Config.new(query: "q", node_sname: "a", node_host: :dns)

      assert {:error, {:invalid_option, "invalid :max_nodes: 0" <> _}} =
               Config.new(query: "q", node_sname: "a", max_nodes: 0)

      assert {:error, _} = Config.new("not a list")
    end
  end
end
