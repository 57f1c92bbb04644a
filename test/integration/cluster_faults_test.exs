defmodule Caravan.ClusterFaultsTest do
  # Faults in a running cluster: 5 real nodes (separate OS processes, no
  # epmd) on 127.0.3.51..55, all on port 4970, each running the strategy
  # with prune: true against a real dnsmasq. A node killed with SIGKILL and
  # restarted under the same name rejoins with a new creation; the
  # nameserver stopped for several polls disconnects nobody; a node whose
  # port is taken fails to boot with a message that names the port.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.{BeamNode, Dnsmasq, Loopback, Listeners, Recorder}

  @moduletag :slow
  @moduletag timeout: 240_000

  @query "_app._tcp.service.consul"
  @port 4970
  @hosts for i <- 1..5, do: {"f#{i}.node.dc1.consul", {127, 0, 3, 50 + i}}
  @poll_interval 300

  setup_all do
    Listeners.guard(4369)
    tmp = Path.join(System.tmp_dir!(), "caravan_faults_#{System.unique_integer([:positive])}")
    File.mkdir_p!(tmp)
    on_exit(fn -> File.rm_rf!(tmp) end)
    %{tmp: tmp}
  end

  describe "a 5-node cluster with the strategy (prune: true)" do
    setup ctx do
      dns = start_dns(Loopback.address())
      on_exit(fn -> Dnsmasq.stop(dns) end)
      inetrc = Dnsmasq.inetrc(dns, Path.join(ctx.tmp, "inetrc"))

      nodes =
        for {host, ip} <- @hosts do
          {peer, node} = start_node(host, ip, inetrc)
          on_exit(fn -> BeamNode.stop(peer) end)
          {peer, node}
        end

      for {peer, _} <- nodes, do: start_strategy(peer, dns)
      assert BeamNode.eventually(fn -> BeamNode.full_mesh?(nodes) end), mesh_report(nodes)
      %{dns: dns, inetrc: inetrc, nodes: nodes}
    end

    test "a node killed with SIGKILL and restarted under the same name rejoins with a new creation",
         %{nodes: nodes, inetrc: inetrc, dns: dns} do
      [{peer1, _node1} | _] = nodes
      {peer5, node5} = List.last(nodes)
      {host5, ip5} = List.last(@hosts)
      survivors = Enum.drop(nodes, -1)

      # The pid of the killed node's init process, <node5.0.0>, as a
      # survivor holds it, and the old creation.
      old_init = BeamNode.call(peer1, :erpc, :call, [node5, :erlang, :whereis, [:init]])
      old_creation = BeamNode.call(peer5, :erlang, :system_info, [:creation])
      os_pid = BeamNode.call(peer5, :os, :getpid, [])

      {_, 0} = System.cmd("kill", ["-KILL", to_string(os_pid)])
      # The :peer controller notices its node's exit and stops.
      assert BeamNode.eventually(fn -> not Process.alive?(peer5) end)

      assert BeamNode.eventually(fn ->
               Enum.all?(survivors, fn {peer, _} ->
                 node5 not in BeamNode.call(peer, Node, :list, [])
               end)
             end)

      # Same name, same address, same port: it boots (the port is free
      # again) and the strategy, on it and on the survivors, rejoins it.
      {new_peer5, ^node5} = start_node(host5, ip5, inetrc)
      on_exit(fn -> BeamNode.stop(new_peer5) end)
      start_strategy(new_peer5, dns)
      nodes = survivors ++ [{new_peer5, node5}]
      assert BeamNode.eventually(fn -> BeamNode.full_mesh?(nodes) end), mesh_report(nodes)

      new_creation = BeamNode.call(new_peer5, :erlang, :system_info, [:creation])
      assert new_creation != old_creation
      assert old_creation > 3 and new_creation > 3

      # The same process slot in the new incarnation is a different pid:
      # the old pid neither equals it nor names a process of the new node.
      new_init = BeamNode.call(peer1, :erpc, :call, [node5, :erlang, :whereis, [:init]])
      assert node(new_init) == node(old_init)
      assert new_init != old_init
      assert BeamNode.call(new_peer5, Recorder, :local_process?, [new_init])
      refute BeamNode.call(new_peer5, Recorder, :local_process?, [old_init])

      # The survivors lost node5 and no other node. (OTP's global may
      # disconnect a restarted node once more while the survivors' views
      # settle; it then comes back, as the full mesh above shows.)
      downs =
        for {peer, _} <- survivors do
          {node_events, _logs} = BeamNode.call(peer, Recorder, :events, [])
          nodedowns = for {:nodedown, node} <- node_events, do: node
          assert nodedowns != [] and Enum.uniq(nodedowns) == [node5]
          length(nodedowns)
        end

      IO.puts(
        "\n[faults] SIGKILL + restart of #{node5}: creation #{old_creation} -> #{new_creation}; " <>
          "nodedowns of it seen by the #{length(survivors)} survivors: #{inspect(downs)}, of others: 0"
      )
    end

    test "the nameserver stopped for several polls disconnects nobody, then works again",
         %{nodes: nodes, dns: dns} do
      failed = "lookup of #{inspect(@query)} failed"
      polls = 6

      :ok = Dnsmasq.stop(dns)

      # Every node's strategy polls (and fails) at least `polls` times.
      assert BeamNode.eventually(
               fn -> Enum.all?(nodes, fn {peer, _} -> failures(peer, failed) >= polls end) end,
               60_000
             ),
             "failed polls per node: #{inspect(for {p, n} <- nodes, do: {n, failures(p, failed)})}"

      # No disconnect anywhere: the mesh is whole and no node saw a nodedown.
      assert BeamNode.full_mesh?(nodes)

      for {peer, _} <- nodes do
        {node_events, _logs} = BeamNode.call(peer, Recorder, :events, [])
        assert Enum.filter(node_events, &(elem(&1, 0) == :nodedown)) == []
      end

      counts = for {peer, _} <- nodes, do: failures(peer, failed)

      # The nameserver comes back on the same address and port.
      dns = start_dns(dns.listen)
      on_exit(fn -> Dnsmasq.stop(dns) end)
      again = "lookup of #{inspect(@query)} works again"

      assert BeamNode.eventually(fn ->
               Enum.all?(nodes, fn {peer, _} ->
                 BeamNode.call(peer, Recorder, :count, [again]) >= 1
               end)
             end)

      assert BeamNode.full_mesh?(nodes)

      for {peer, _} <- nodes do
        {node_events, _} = BeamNode.call(peer, Recorder, :events, [])
        assert Enum.filter(node_events, &(elem(&1, 0) == :nodedown)) == []
      end

      IO.puts(
        "\n[faults] nameserver down: failed polls per node #{inspect(counts)} " <>
          "(poll_interval #{@poll_interval} ms, prune: true), 0 disconnects"
      )
    end
  end

  test "a node whose port is taken by another process fails to boot, naming the port" do
    ip = {127, 0, 3, 59}
    {:ok, holder} = :gen_tcp.listen(4979, ip: ip, reuseaddr: true)
    on_exit(fn -> :gen_tcp.close(holder) end)

    # The same flags as every other node; the VM runs a command that only
    # a booted node reaches.
    args =
      ["-name", "app-4979@127.0.3.59", "-noshell"] ++
        BeamNode.erl_args(ip) ++ ["-eval", "io:format(\"booted~n\"), halt()."]

    {out, status} = System.cmd("erl", args, stderr_to_stdout: true)

    assert status != 0
    refute out =~ "booted"

    assert out =~
             "[caravan] cannot listen: port 4979 on 127.0.3.59, the port of node name " <>
               "app-4979@127.0.3.59, is already in use (eaddrinuse)"

    # The holder is untouched and still the one listening.
    assert {:ok, {^ip, 4979}} = :inet.sockname(holder)
    assert BeamNode.listening?(ip, 4979)
  end

  defp start_dns(listen) do
    Dnsmasq.start(
      listen: listen,
      port: 8746,
      srv: for({host, _} <- @hosts, do: {@query, host, @port}),
      hosts: for({host, ip} <- @hosts, do: {host, to_string(:inet.ntoa(ip))})
    )
  end

  defp start_node(host, ip, inetrc) do
    node = BeamNode.start("app-#{@port}", host, ip, inetrc: inetrc)
    :ok = BeamNode.call(elem(node, 0), Recorder, :start, [])
    node
  end

  defp start_strategy(peer, dns) do
    {:ok, _} =
      BeamNode.call(peer, BeamNode, :remote_start_strategy, [
        [
          query: @query,
          node_sname: "app",
          nameservers: [Dnsmasq.nameserver(dns)],
          poll_interval: @poll_interval,
          prune: true
        ]
      ])
  end

  defp failures(peer, text), do: BeamNode.call(peer, Recorder, :count, [text])

  defp mesh_report(nodes) do
    "no full mesh: " <>
      inspect(for {peer, node} <- nodes, do: {node, BeamNode.call(peer, Node, :list, [])})
  end
end
