defmodule Caravan.Integration.DoctorOutsideTest do
  # `mix caravan.doctor` in a shell without the nodes' CARAVAN_NAMESERVERS:
  # the topology's nameservers stand in for peers' host lookups, so a
  # healthy cluster reports no problem, and the report leaves out this VM
  # (not a member) and whether peers are connected to it.
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO
  alias Caravan.Test.{BeamNode, Dnsmasq}

  @moduletag :integration
  @moduletag timeout: 120_000

  setup_all do
    dns =
      Dnsmasq.start(
        listen: "127.0.27.53",
        port: 8600,
        srv: [{"_app._tcp.service.consul", "web1.node.dc27.consul", 4370}],
        hosts: [{"web1.node.dc27.consul", "127.0.27.1"}]
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)

    {peer, _node} =
      BeamNode.start("app-4370", "web1.node.dc27.consul", {127, 0, 27, 1},
        env: [{"CARAVAN_NAMESERVERS", "127.0.27.53:8600"}]
      )

    on_exit(fn -> BeamNode.stop(peer) end)
    :ok
  end

  setup do
    reset = fn ->
      System.delete_env("CARAVAN_NAMESERVERS")
      :ok = Caravan.Epmd.HostResolver.configure()
    end

    reset.()
    on_exit(reset)
  end

  test "without CARAVAN_NAMESERVERS here, a healthy topology has no problem" do
    Mix.Task.reenable("caravan.doctor")

    args =
      ["--query", "_app._tcp.service.consul", "--node-sname", "app"] ++
        ["--nameserver", "127.0.27.53:8600"]

    out =
      capture_io(fn ->
        result =
          try do
            Mix.Tasks.Caravan.Doctor.run(args)
          catch
            :exit, reason -> {:exit, reason}
          end

        send(self(), {:result, result})
      end)

    assert_received {:result, :ok}, out
    assert out =~ "this shell has no CARAVAN_NAMESERVERS"
    assert out =~ "app-4370@web1.node.dc27.consul: resolves to 127.0.27.1, port 4370 accepts TCP"
    assert out =~ "Caravan diagnosis from outside the cluster"
    refute out =~ "nonode@nohost"
    refute out =~ "NOT connected"
    assert out =~ "Verdict: no problems found."
  end
end
