defmodule Caravan.ReleaseConsulTest do
  # A `mix release` set up exactly as the README says, with a Consul-style
  # node name: `RELEASE_DISTRIBUTION`, `RELEASE_NODE` and
  # `CARAVAN_NAMESERVERS` in rel/env.sh.eex (which the release scripts
  # source for the node and for the helper nodes of rpc/remote/stop/pid),
  # Caravan's epmd lines in rel/vm.args.eex and rel/remote.vm.args.eex.
  # A real dnsmasq answers for web1.node.dc1.consul. `bin/throwaway pid`,
  # `rpc`, `rpc 'Caravan.diagnose()'`, `remote` work, a topology with no
  # nameservers finds a peer through CARAVAN_NAMESERVERS, a helper that
  # cannot resolve the node says why, and `stop` really stops the node.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.{BeamNode, Dnsmasq, Listeners, Release}

  @moduletag :slow
  @moduletag timeout: 300_000

  @ip {127, 0, 5, 1}
  @node "app-4902@web1.node.dc1.consul"
  @port 4902
  @cookie "caravan_consul_release_cookie_5d1"
  @peer "app-4902@web2.node.dc1.consul"

  @vm_args """
  -start_epmd false
  -epmd_module Elixir.Caravan.Epmd.Client
  -kernel inet_dist_use_interface {127,0,5,1}
  """

  @env_sh """
  export RELEASE_DISTRIBUTION=name
  export RELEASE_NODE=#{@node}
  export CARAVAN_NAMESERVERS=127.0.5.53:8600
  """

  setup_all do
    Listeners.guard(4369)

    dns =
      Dnsmasq.start(
        listen: "127.0.5.53",
        port: 8600,
        srv: [
          {"_app._tcp.service.consul", "web1.node.dc1.consul", @port},
          {"_app._tcp.service.consul", "web2.node.dc1.consul", @port}
        ],
        hosts: [{"web1.node.dc1.consul", "127.0.5.1"}, {"web2.node.dc1.consul", "127.0.5.2"}]
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)

    bin =
      Release.build("caravan_consul_rel", %{
        "vm.args.eex" => @vm_args,
        "remote.vm.args.eex" => @vm_args,
        "env.sh.eex" => @env_sh
      })

    # Only the cookie comes from the environment; the rest is env.sh.eex.
    env = [{"RELEASE_COOKIE", @cookie}]
    refute BeamNode.listening?(@ip, @port)
    Release.start(bin, env, @ip, @port)
  end

  defp run(%{bin: bin, env: env}, args),
    do: System.cmd(bin, args, env: env, stderr_to_stdout: true)

  # One test, in order: stop comes last.
  test "pid, rpc, rpc Caravan.diagnose(), remote and stop work with a .consul node name", ctx do
    {out, 0} = run(ctx, ["pid"])
    assert String.trim(out) == to_string(ctx.os_pid)

    {out, status} = run(ctx, ["rpc", "IO.puts(Enum.join([:node, node()], \"=\"))"])
    assert status == 0, out
    assert out =~ "node=#{@node}"

    {report, status} = run(ctx, ["rpc", "Caravan.diagnose()"])
    assert status == 0, report
    assert report =~ "node name:      #{@node}"
    assert report =~ "listening on port #{@port}, 127.0.5.1 (-kernel inet_dist_use_interface)"
    assert report =~ "nameservers:    127.0.5.53:8600 (from CARAVAN_NAMESERVERS)"
    # The rpc helper node is connected (hidden) while the report is made.
    assert report =~ ~r/connected:      1: rpc-[0-9a-f]+-#{@node}/
    refute report =~ @cookie

    check_remote(ctx)

    # A topology with no nameservers finds its peer (a node at web2) through
    # env.sh's CARAVAN_NAMESERVERS alone.
    {peer, _} =
      BeamNode.start("app-4902", "web2.node.dc1.consul", {127, 0, 5, 2},
        env: [{"CARAVAN_NAMESERVERS", "127.0.5.53:8600"}],
        cookie: @cookie
      )

    on_exit(fn -> BeamNode.stop(peer) end)

    start =
      "spawn(fn -> {:ok, _} = Caravan.Cluster.DnsStrategy.start_link(query: " <>
        ~s{"_app._tcp.service.consul", node_sname: "app", poll_interval: 200); } <>
        "Process.sleep(:infinity) end)"

    {out, status} = run(ctx, ["rpc", start])
    assert status == 0, out

    assert BeamNode.eventually(
             fn -> elem(run(ctx, ["rpc", "IO.inspect(Node.list())"]), 0) =~ @peer end,
             30_000
           )

    # Why env.sh must carry CARAVAN_NAMESERVERS: without it in the env.sh
    # the scripts source, the helper cannot resolve the .consul host
    # and `stop` fails while the node keeps running.
    env_sh = Path.join([Path.dirname(ctx.bin), "..", "releases", "0.1.0", "env.sh"])
    original = File.read!(env_sh)
    assert original =~ "export CARAVAN_NAMESERVERS="
    File.write!(env_sh, String.replace(original, ~r/^export CARAVAN_NAMESERVERS=.*$/m, ""))
    {out, status} = run(ctx, ["stop"])
    File.write!(env_sh, original)
    assert status != 0
    # :nodedown (Elixir 1.14's release script) or :noconnection (1.18+).
    assert out =~ ~r/nodedown|noconnection/
    # Caravan says why first.
    assert out =~
             "[caravan] cannot reach node #{@node}: host web1.node.dc1.consul does not resolve"

    assert File.exists?("/proc/#{ctx.os_pid}")

    # A CARAVAN_NAMESERVERS at a closed port: rpc names that nameserver.
    closed = "export CARAVAN_NAMESERVERS=127.0.0.1:1"
    File.write!(env_sh, String.replace(original, ~r/^export CARAVAN_NAMESERVERS=.*$/m, closed))
    {out, status} = run(ctx, ["rpc", "IO.puts(:hello)"])
    File.write!(env_sh, original)
    assert status != 0

    assert out =~
             "[caravan] cannot reach node #{@node}: host web1.node.dc1.consul does not " <>
               "resolve: the nameservers from CARAVAN_NAMESERVERS (127.0.0.1:1) answered"

    {out, status} = run(ctx, ["stop"])
    assert status == 0, out
    assert BeamNode.eventually(fn -> not File.exists?("/proc/#{ctx.os_pid}") end, 30_000)
    refute BeamNode.listening?(@ip, @port)
  end

  defp check_remote(ctx) do
    shell = Release.remote_shell(ctx)
    assert Release.read_until(shell, "iex(#{@node})1>") =~ "iex(#{@node})1>"
    # Printed with Enum.join so that the echo of the command does not match.
    Port.command(
      shell,
      ~s{IO.puts(Enum.join(["on", node(), "from", node(Process.group_leader())], " "))\n}
    )

    out = Release.read_until(shell, "on #{@node} from rem-")
    assert out =~ ~r/on #{@node} from rem-[0-9a-f]+-#{@node}/

    # Leave the shell: halt the helper node, not the node it is attached to.
    Port.command(shell, ~s{:erpc.cast(node(Process.group_leader()), :erlang, :halt, [])\n})
    assert_receive {^shell, {:exit_status, _}}, 30_000
    assert BeamNode.listening?(@ip, @port)
  end
end
