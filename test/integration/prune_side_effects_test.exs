defmodule Caravan.Cluster.PruneTest do
  # The strategy's prune side effects with a real DNS server whose records
  # change while it runs (Caravan.Test.FaultDns on 127.0.2.1:8790) and
  # libcluster's hooks stood in by the test (Caravan.Test.Topology; hex is
  # unreachable). Real nodes and the whole mechanism: Caravan.LabTest.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Cluster.DnsStrategy
  alias Caravan.Test.{FaultDns, Topology}

  @query "_app._tcp.service.consul"
  @web1 :"app-4801@web1.node.dc1.consul"
  @web2 :"app-4802@web2.node.dc1.consul"
  @web3 :"app-4803@web3.node.dc1.consul"

  # A connect MFA that never finishes: it tells the test it started.
  def hanging_connect(test, node) do
    send(test, {:connecting, node, self()})
    Process.sleep(:infinity)
  end

  defp start(server, opts) do
    config =
      [
        query: @query,
        node_sname: "app",
        nameservers: [FaultDns.nameserver(server)],
        poll_interval: 150,
        timeout: 400
      ] ++ opts

    state = %{Topology.state(config, self()) | connect: {__MODULE__, :hanging_connect, [self()]}}
    start_supervised!({DnsStrategy, [state]})
  end

  test "a connect in flight to a node DNS has dropped is cancelled at the next authoritative poll" do
    server = start_supervised!({FaultDns, ip: {127, 0, 2, 1}, port: 8790})
    start(server, connect_timeout: 60_000)

    assert_receive {:connecting, @web1, pid1}, 5_000
    assert_receive {:connecting, @web2, pid2}, 5_000
    ref1 = Process.monitor(pid1)
    ref2 = Process.monitor(pid2)

    # A failed lookup cancels nothing.
    :ok = FaultDns.set_mode(server, :servfail)
    refute_receive {:DOWN, _, :process, _, _}, 600

    :ok = FaultDns.set_mode(server, :normal)
    :ok = FaultDns.set_records(server, [{1, 1, 4801, "web1.node.dc1.consul"}])
    assert_receive {:DOWN, ^ref2, :process, ^pid2, :killed}, 5_000
    refute_receive {:DOWN, ^ref1, :process, ^pid1, _}, 600
  end

  test "asked to leave by a member, the strategy stops connecting" do
    server = start_supervised!({FaultDns, ip: {127, 0, 2, 1}, port: 8790})
    strategy = start(server, connect_timeout: 60_000)
    assert Process.whereis(DnsStrategy.registered_name(:test)) == strategy

    assert_receive {:connecting, @web1, pid1}, 5_000
    ref1 = Process.monitor(pid1)

    send(DnsStrategy.registered_name(:test), {:caravan_leave, :test, @web1})
    # Its connects in flight stop, and a node DNS lists from now on is not dialed.
    assert_receive {:DOWN, ^ref1, :process, ^pid1, :killed}, 5_000

    :ok =
      FaultDns.set_records(server, [
        {1, 1, 4801, "web1.node.dc1.consul"},
        {1, 1, 4803, "web3.node.dc1.consul"}
      ])

    refute_receive {:connecting, @web3, _}, 1_000
  end
end
