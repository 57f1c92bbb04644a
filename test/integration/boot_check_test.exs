defmodule Caravan.BootCheckTest do
  # Boot-time mistakes, each made on a real `erl` node with Caravan's
  # flags (no epmd): the line the person sees names the cause and the fix.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.BeamNode

  @moduletag timeout: 120_000

  # Runs erl with `args` and a command only a booted, distributed node
  # reaches; returns {output, status}.
  defp erl(args) do
    System.cmd(
      "erl",
      ["-noshell"] ++
        args ++ ["-eval", "io:format(\"booted as ~s~n\", [node()]), halt()."],
      stderr_to_stdout: true
    )
  end

  test "a misspelt -caravan_* flag stops the boot, naming the nearest known flag" do
    {out, status} =
      erl(
        ["-name", "app-4931@127.0.4.1"] ++
          BeamNode.erl_args({127, 0, 4, 1}) ++ ["-caravan_nameserver", "127.0.0.1:8600"]
      )

    assert status != 0
    refute out =~ "booted"

    assert out =~
             "[caravan] unknown flag -caravan_nameserver: did you mean -caravan_nameservers? " <>
               "Caravan knows -caravan_nameservers, -caravan_dns_timeout"
  end

  test "-no_epmd with Caravan's epmd module stops the boot, saying to use -start_epmd false" do
    # erlexec insists on a -proto_dist with -no_epmd; users add inet_tcp.
    args =
      ["-name", "app-4932@127.0.4.2", "-no_epmd", "-proto_dist", "inet_tcp"] ++
        BeamNode.erl_args({127, 0, 4, 2})

    {out, status} = erl(args)

    refute out =~ "booted"
    assert status != 0

    assert out =~
             ~r/\[caravan\] -no_epmd is set together with -epmd_module Elixir.Caravan.Epmd.Client: OTP then never starts the epmd module, so node app-4932 listens on port \d+, not 4932 from its name, and -caravan_nameservers is not read. Replace -no_epmd with -start_epmd false/

    refute BeamNode.listening?({127, 0, 4, 2}, 4932)
  end

  test "a node name without a port boots on 4370 without a boot warning when no SRV topology is configured" do
    # app@<ip> is how A/AAAA topologies (record_type: :a) name nodes; the
    # SRV case is told by the strategy at start (strategy_diagnostics_test).
    {out, 0} = erl(["-name", "app@127.0.4.3"] ++ BeamNode.erl_args({127, 0, 4, 3}))
    assert out =~ "booted as app@127.0.4.3"
    refute out =~ "[caravan]"
  end

  test "the boot warning for a name without a port, given a Caravan SRV topology in libcluster's config" do
    srv = [
      caravan: [
        strategy: Caravan.Cluster.DnsStrategy,
        config: [query: "_app._tcp.service.consul", node_sname: "app"]
      ]
    ]

    a = [
      caravan: [strategy: Caravan.Cluster.DnsStrategy, config: [query: "app", record_type: :a]]
    ]

    assert Caravan.Epmd.BootCheck.name_without_port_message(:app, ~c"web1", 4370, srv) ==
             "node name app@web1 has no port in its name part: it listens on 4370, but " <>
               "Caravan.Cluster.DnsStrategy's peers dial <node_sname>-<port>@<host> " <>
               "(app-4370@web1) and will not reach it. Name the node app-4370@web1 " <>
               "(RELEASE_NODE in rel/env.sh.eex)."

    assert Caravan.Epmd.BootCheck.name_without_port_message(:"app-4370", ~c"web1", 4370, srv) ==
             nil

    assert Caravan.Epmd.BootCheck.name_without_port_message(:app, ~c"web1", 4370, a) == nil
    assert Caravan.Epmd.BootCheck.name_without_port_message(:app, ~c"web1", 4370, :junk) == nil
  end

  test "a second node on the same port and every address fails, suggesting inet_dist_use_interface" do
    # Two nodes of one host, same port, neither with inet_dist_use_interface:
    # the first binds 0.0.0.0:4934.
    no_interface = fn args -> drop_interface(args) end

    {:ok, peer, _node} =
      :peer.start(%{
        name: ~c"app-4934",
        host: ~c"127.0.4.4",
        longnames: true,
        connection: :standard_io,
        args: Enum.map(no_interface.(BeamNode.erl_args({127, 0, 4, 4})), &String.to_charlist/1)
      })

    on_exit(fn -> BeamNode.stop(peer) end)
    assert BeamNode.listening?({127, 0, 4, 4}, 4934)

    {out, status} =
      erl(["-name", "app-4934@127.0.4.5"] ++ no_interface.(BeamNode.erl_args({127, 0, 4, 5})))

    assert status != 0
    refute out =~ "booted"

    assert out =~
             "[caravan] cannot listen: port 4934 on 0.0.0.0, the port of node name " <>
               "app-4934@127.0.4.5, is already in use (eaddrinuse)"

    assert out =~
             "Several nodes on one host with the same port each need their own address: " <>
               "add -kernel inet_dist_use_interface '{127,0,4,5}' (the address of 127.0.4.5) to " <>
               "vm.args (in ELIXIR_ERL_OPTIONS or ERL_FLAGS without the quotes)."
  end

  defp drop_interface(["-kernel", "inet_dist_use_interface", _ip | rest]), do: rest
  defp drop_interface([arg | rest]), do: [arg | drop_interface(rest)]
  defp drop_interface([]), do: []
end
