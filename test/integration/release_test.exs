defmodule Caravan.ReleaseTest do
  # An Elixir release (`mix release` of a throwaway app that uses Caravan as
  # a path dependency) runs as an epmd-less node with Caravan's vm.args
  # lines, and its own `bin/throwaway rpc` and `bin/throwaway remote` reach
  # it: their helper nodes (`rpc-XXXX-<node>`, `rem-XXXX-<node>`) listen on
  # a random port instead of the node's own, and no epmd is involved.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.{BeamNode, Listeners, Release}

  @moduletag :slow
  @moduletag timeout: 300_000

  @ip {127, 0, 3, 1}
  @node "app-4901@127.0.3.1"
  @port 4901
  # Caravan's lines, in both rel/vm.args.eex and rel/remote.vm.args.eex
  # (the README's advice): the helper nodes of `remote` and `rpc` boot with
  # remote.vm.args.
  @vm_args """
  -start_epmd false
  -epmd_module Elixir.Caravan.Epmd.Client
  """

  setup_all do
    # Fails the module if anything listens on 4369 at any time.
    Listeners.guard(4369)

    # The library built for this checkout is copied in, so the release
    # build does not run cargo (the compiler test covers that).
    bin =
      Release.build("caravan_release_test", %{
        "vm.args.eex" => @vm_args,
        "remote.vm.args.eex" => @vm_args
      })

    env = [
      {"RELEASE_DISTRIBUTION", "name"},
      {"RELEASE_NODE", @node},
      {"RELEASE_COOKIE", "caravan_release_cookie"},
      # Loopback "host" of this test; the helper nodes listen there too.
      {"ELIXIR_ERL_OPTIONS", "-kernel inet_dist_use_interface {127,0,3,1}"}
    ]

    refute BeamNode.listening?(@ip, @port), "something already listens on #{@node}'s port"
    Release.start(bin, env, @ip, @port)
  end

  test "the release runs epmd-less on the port from its node name", %{bin: bin, env: env} = ctx do
    {out, 0} = System.cmd(bin, ["pid"], env: env, stderr_to_stdout: true)
    # `bin/throwaway pid` asks the node itself (through an rpc helper node).
    assert String.trim(out) == to_string(ctx.os_pid)

    {out, 0} =
      System.cmd(
        bin,
        [
          "rpc",
          ~S"""
          IO.puts("node=#{node()}")
          IO.puts("epmd_module=#{:net_kernel.epmd_module()}")
          {:ok, names} = :net_adm.names()
          IO.puts("names=" <> Base.encode64(:erlang.term_to_binary(names)))
          """
        ],
        env: env,
        stderr_to_stdout: true
      )

    assert out =~ "node=#{@node}"
    assert out =~ "epmd_module=Elixir.Caravan.Epmd.Client"
    # net_adm:names/0 answers with the node itself (there is no daemon).
    assert printed_term(out, "names=") == [{~c"app-4901", 4901}]
    assert Listeners.on_port(4369) == []
  end

  test "bin/throwaway rpc runs code on the node; its helper listens on a random port",
       %{bin: bin, env: env} do
    expr = ~S"""
    IO.puts("hello=#{Throwaway.hello()}")
    [helper] = Node.list(:hidden)
    {:ok, [{name, port}]} = :erpc.call(helper, :net_adm, :names, [])
    IO.puts("helper=#{helper} name=#{name} port=#{port}")
    """

    {out, status} = System.cmd(bin, ["rpc", expr], env: env, stderr_to_stdout: true)
    assert status == 0, out
    assert out =~ "hello=world"
    refute out =~ "eaddrinuse"

    assert [_, helper, name, port] = Regex.run(~r/helper=(\S+) name=(\S+) port=(\d+)/, out)

    # The helper is rpc-<hex>-<node>, on the node's host, listening on a port
    # the OS picked, not on the node's own port 4901.
    assert helper =~ ~r/\Arpc-[0-9a-f]+-app-4901@127\.0\.3\.1\z/
    assert name <> "@127.0.3.1" == helper
    assert String.to_integer(port) not in [0, @port]

    # The helper has gone; the node still listens; still no epmd.
    assert BeamNode.listening?(@ip, @port)
    assert Listeners.on_port(4369) == []
  end

  test "bin/throwaway remote opens a shell on the node", %{bin: bin, env: env} do
    # IEx ignores --remsh without a terminal, so the shell runs under
    # script(1) (util-linux), which gives it a pseudo-terminal; if the test
    # fails half-way, everything under it is killed, by pid.
    shell = Release.remote_shell(%{bin: bin, env: env})

    # The prompt names the node the shell evaluates on: the release's node.
    assert Release.read_until(shell, "iex(#{@node})1>") =~ "iex(#{@node})1>"

    # Printed with Enum.join so that the terminal's echo of the command
    # does not match the patterns.
    Port.command(
      shell,
      ~s{IO.puts(Enum.join(["on", node(), "from", node(Process.group_leader())], " "))\n}
    )

    out = Release.read_until(shell, ~r/on \S+ from \S+/)
    [_, on, helper] = Regex.run(~r/on (\S+) from (\S+)/, out)
    assert on == @node
    assert helper =~ ~r/\Arem-[0-9a-f]+-app-4901@127\.0\.3\.1\z/

    Port.command(
      shell,
      ~s{names = :erpc.call(:"#{helper}", :net_adm, :names, [])\n} <>
        ~s{IO.puts(Enum.join(["names", Base.encode64(:erlang.term_to_binary(names))], " "))\n}
    )

    out = Release.read_until(shell, ~r/names [A-Za-z0-9+\/]+=*\r?\n/)
    assert {:ok, [{name, port}]} = printed_term(out, "names ")
    assert List.to_string(name) =~ ~r/\Arem-[0-9a-f]+-app-4901\z/
    assert port not in [0, @port]
    refute out =~ "eaddrinuse"
    assert Listeners.on_port(4369) == []

    # Leave the shell: halt the helper node (not the node it is attached to).
    Port.command(shell, ~s{:erpc.cast(:"#{helper}", :erlang, :halt, [])\n})
    assert_receive {^shell, {:exit_status, _}}, 30_000
    assert BeamNode.listening?(@ip, @port)

    {out, 0} = System.cmd(bin, ["rpc", "IO.puts(Throwaway.hello())"], env: env)
    assert out =~ "world"
  end

  # The term a remote command printed after `label` as Base64 of its
  # external term format: compared as a value, not as inspect output
  # (Elixir 1.15+ inspects charlists as ~c"...").
  defp printed_term(out, label) do
    [_, base64] = Regex.run(~r/#{Regex.escape(label)}([A-Za-z0-9+\/]+=*)\r?\n/, out)
    base64 |> Base.decode64!() |> :erlang.binary_to_term([:safe])
  end
end
