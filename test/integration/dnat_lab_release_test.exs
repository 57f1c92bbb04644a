defmodule Caravan.Integration.DnatLabReleaseTest do
  # A real release (`mix release` of a throwaway app using Caravan) in a
  # container of the DNAT lab (Caravan.Test.DnatLab), in each mode: it
  # listens on 4370 inside (ERL_DIST_PORT), the lab's other nodes find it
  # through DNS and connect through its host port, and its own
  # `bin/throwaway rpc` and `bin/throwaway remote`, run inside the
  # container with the node's environment, reach it: their helper nodes
  # listen on a port the OS picks and dial the node's advertised port
  # (from its name, or from the SRV query).
  use ExUnit.Case, async: false

  alias Caravan.Test.{BeamNode, DnatLab, Lab, OsProcesses, ThrowawayApp}

  @moduletag :integration
  @moduletag :slow
  @moduletag timeout: 400_000

  if reason = Lab.unavailable_reason() do
    IO.puts("Caravan.Integration.DnatLabReleaseTest skipped: #{reason}")
    @moduletag skip: "the multi-host lab cannot run here: #{reason}"
  end

  @vm_args """
  -start_epmd false
  -epmd_module Elixir.Caravan.Epmd.Client
  """

  setup_all do
    tmp =
      Path.join(System.tmp_dir!(), "caravan_dnat_release_#{System.unique_integer([:positive])}")

    File.rm_rf!(tmp)
    File.mkdir_p!(tmp)
    on_exit(fn -> File.rm_rf!(tmp) end)

    caravan = ThrowawayApp.copy_caravan(tmp, prebuilt_native: true)
    app = ThrowawayApp.new(tmp, "throwaway", caravan)
    File.mkdir_p!(Path.join(app, "rel"))
    File.write!(Path.join(app, "rel/vm.args.eex"), @vm_args)
    File.write!(Path.join(app, "rel/remote.vm.args.eex"), @vm_args)

    {out, status} =
      System.cmd("mix", ["release", "--quiet"],
        cd: app,
        env: ThrowawayApp.release_env(),
        stderr_to_stdout: true
      )

    if status != 0, do: raise("mix release failed (#{status}):\n#{out}")
    %{bin: Path.join(app, "_build/prod/rel/throwaway/bin/throwaway")}
  end

  for mode <- [:name, :srv] do
    test "bin/throwaway rpc and remote reach the release in a container (node_port: #{mode})",
         %{bin: bin} do
      run(unquote(mode), bin)
    end
  end

  defp run(mode, bin) do
    key = {1, 1}
    lab = DnatLab.start(mode, empty: [key])
    on_exit(fn -> DnatLab.stop(lab) end)
    target = DnatLab.node_of(lab, key)
    {argv, env} = DnatLab.in_container(lab, key, [bin, "start"])
    [exe | args] = argv

    release =
      Port.open({:spawn_executable, System.find_executable(exe)}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: args,
        env: charlist_env(env)
      ])

    {:os_pid, os_pid} = Port.info(release, :os_pid)

    on_exit(fn ->
      {stop, env} = DnatLab.in_container(lab, key, [bin, "stop"])
      System.cmd(hd(stop), tl(stop), env: env, stderr_to_stdout: true)
      gone? = fn -> not File.exists?("/proc/#{os_pid}") end
      unless BeamNode.eventually(gone?, 10_000), do: OsProcesses.kill_tree(os_pid)
    end)

    others = DnatLab.keys() -- [key]
    for k <- others, do: DnatLab.start_strategy(lab, k)

    assert BeamNode.eventually(
             fn -> Enum.all?(others, &(target in DnatLab.call(lab, &1, Node, :list, []))) end,
             60_000
           ),
           "the release #{target} did not join"

    # bin/throwaway rpc, inside the container, with the node's environment.
    {rpc, env} =
      DnatLab.in_container(lab, key, [
        bin,
        "rpc",
        ~S"""
        [helper] = Node.list(:hidden)
        {:ok, [{_name, port}]} = :erpc.call(helper, :net_adm, :names, [])
        IO.puts("node=#{node()} nodes=#{length(Node.list())} helper_port=#{port}")
        """
      ])

    {out, status} = System.cmd(hd(rpc), tl(rpc), env: env, stderr_to_stdout: true)
    assert status == 0, out
    assert out =~ "node=#{target} nodes=3"
    [_, port] = Regex.run(~r/helper_port=(\d+)/, out)
    assert String.to_integer(port) != 4370

    # bin/throwaway remote, under script(1) for a terminal (IEx wants one).
    script = System.find_executable("script") || flunk("script(1) is missing (bsdutils)")
    {remote, env} = DnatLab.in_container(lab, key, [bin, "remote"])

    shell =
      Port.open({:spawn_executable, script}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ["-qec", Enum.join(remote, " "), "/dev/null"],
        env: charlist_env(env)
      ])

    {:os_pid, script_pid} = Port.info(shell, :os_pid)
    on_exit(fn -> OsProcesses.kill_tree(script_pid) end)
    assert read_until(shell, "iex(#{target})1>") =~ "iex(#{target})1>"
    Port.command(shell, ~s{IO.puts(Enum.join(["on", node()], " "))\n})
    assert read_until(shell, ~r/on \S+@/) =~ "on #{target}"
    Port.command(shell, ~s{:erpc.cast(node(Process.group_leader()), :erlang, :halt, [])\n})
    assert_receive {^shell, {:exit_status, _}}, 30_000
    assert DnatLab.listening(lab, 4369) == []
  end

  defp charlist_env(env),
    do: for({k, v} <- env, do: {String.to_charlist(k), String.to_charlist(v)})

  # Output of a port until it matches `pattern`, bounded at 30 s.
  defp read_until(port, pattern, acc \\ "") do
    if (is_binary(pattern) and String.contains?(acc, pattern)) or
         (is_struct(pattern, Regex) and Regex.match?(pattern, acc)) do
      acc
    else
      receive do
        {^port, {:data, data}} -> read_until(port, pattern, acc <> data)
        {^port, {:exit_status, status}} -> flunk("exited (#{status}):\n#{acc}")
      after
        30_000 -> flunk("no #{inspect(pattern)} within 30 s:\n#{acc}")
      end
    end
  end
end
