defmodule Mix.Tasks.Caravan.DoctorTest do
  # `mix caravan.doctor` from outside the cluster (this test VM is not
  # distributed), against a real dnsmasq and a real node: a healthy
  # topology passes, a broken one exits 1 naming the cause.
  use ExUnit.Case, async: false

  @moduletag :integration

  import ExUnit.CaptureIO
  alias Caravan.Test.{BeamNode, Dnsmasq}

  @moduletag timeout: 120_000

  setup_all do
    dns =
      Dnsmasq.start(
        listen: "127.0.6.53",
        port: 8600,
        srv: [
          {"_app._tcp.service.consul", "web1.node.dc1.consul", 4370},
          {"_broken._tcp.service.consul", "web1.node.dc1.consul", 4370},
          {"_broken._tcp.service.consul", "web3.node.dc1.consul", 4370}
        ],
        hosts: [{"web1.node.dc1.consul", "127.0.6.1"}, {"web3.node.dc1.consul", "127.0.6.3"}]
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)
    {peer, _node} = BeamNode.start("app-4370", "web1.node.dc1.consul", {127, 0, 6, 1})
    on_exit(fn -> BeamNode.stop(peer) end)

    System.put_env("CARAVAN_NAMESERVERS", "127.0.6.53:8600")

    on_exit(fn ->
      System.delete_env("CARAVAN_NAMESERVERS")
      Caravan.Epmd.HostResolver.configure()
    end)

    :ok
  end

  defp doctor(query) do
    Mix.Task.reenable("caravan.doctor")

    args = ["--query", query, "--node-sname", "app", "--nameserver", "127.0.6.53:8600"]

    capture_io(fn ->
      result =
        try do
          Mix.Tasks.Caravan.Doctor.run(args)
        catch
          :exit, reason -> {:exit, reason}
        end

      send(self(), {:result, result})
    end)
  end

  test "a healthy topology: every node resolves and accepts TCP, no problems" do
    out = doctor("_app._tcp.service.consul")
    assert_received {:result, :ok}
    assert out =~ "app-4370@web1.node.dc1.consul: resolves to 127.0.6.1, port 4370 accepts TCP"
    assert out =~ "Verdict: no problems found."
  end

  test "a dead peer: exit 1, naming the address and what to check" do
    out = doctor("_broken._tcp.service.consul")
    assert_received {:result, {:exit, {:shutdown, 1}}}

    assert out =~
             "app-4370@web3.node.dc1.consul: nothing listens on 127.0.6.3:4370 (connection refused)"

    assert out =~ "Verdict: 1 problem(s)"
  end
end
