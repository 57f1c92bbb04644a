defmodule Caravan.LeftoverCheckTest do
  # The end-of-suite check of test/test_helper.exs (Caravan.Test.OsProcesses)
  # on real OS processes: it sees a process that carries this run's tag and
  # only such processes, kills what it reports, and kill_tree/1 reaches
  # grandchildren (a release helper node under script(1) is one).
  use ExUnit.Case, async: true

  @moduletag :integration

  import ExUnit.CaptureIO

  alias Caravan.Test.{BeamNode, OsProcesses}

  defp spawn_os(command, args, env \\ []) do
    port =
      Port.open({:spawn_executable, System.find_executable(command)}, [
        :binary,
        args: args,
        env: for({k, v} <- env, do: {String.to_charlist(k), String.to_charlist(v)})
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    tag = List.keyfind(env, "CARAVAN_TEST_RUN", 0, {nil, System.get_env("CARAVAN_TEST_RUN")})
    on_exit(fn -> OsProcesses.kill_tree(os_pid, elem(tag, 1)) end)
    os_pid
  end

  defp gone?(os_pid), do: BeamNode.eventually(fn -> not alive?(os_pid) end, 10_000)

  defp alive?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> not (stat |> String.split(") ") |> List.last() |> String.starts_with?("Z"))
      {:error, _} -> false
    end
  end

  test "a process of this run is a leftover; one of another run is not" do
    run = System.fetch_env!("CARAVAN_TEST_RUN")
    other_run = "other-run-#{System.unique_integer([:positive])}"
    mine = spawn_os("sleep", ["600"])
    other = spawn_os("sleep", ["600"], [{"CARAVAN_TEST_RUN", other_run}])

    # Found once exec'd (until then the child is a fork of the VM's
    # erl_child_setup, with that process's environment).
    found = fn run, pid ->
      BeamNode.eventually(fn ->
        Enum.find(OsProcesses.leftovers(run), &(&1.pid == pid and &1.comm == "sleep"))
      end)
    end

    assert %{pid: ^mine, cmdline: cmdline} = found.(run, mine)
    assert cmdline =~ ~r{\A(/usr)?(/bin/)?sleep 600\z}
    assert %{pid: ^other} = found.(other_run, other)
    assert [%{pid: ^other}] = OsProcesses.leftovers(other_run)
    refute Enum.any?(OsProcesses.leftovers(run), &(&1.pid == other))

    # The check reports it, names it, kills it; then the run is clean.
    report =
      capture_io(:stderr, fn ->
        assert {:error, [%{pid: ^other}]} = OsProcesses.check(other_run, 0)
      end)

    assert report =~ ~r{pid #{other} \(sleep\): \S*sleep 600}
    assert gone?(other)
    assert OsProcesses.check(other_run, 0) == :ok
    assert alive?(mine)
  end

  test "kill_tree/1 kills a process and its children's children" do
    # sh -> (sh -> sleep, sleep): the inner shell's sleep is a grandchild.
    top = spawn_os("sh", ["-c", "sh -c 'sleep 600 & wait' & sleep 600 & wait"])

    assert BeamNode.eventually(fn -> length(OsProcesses.descendants(top)) == 3 end, 10_000),
           inspect(OsProcesses.descendants(top))

    tree = [top | OsProcesses.descendants(top)]
    assert Enum.sort(OsProcesses.kill_tree(top)) == Enum.sort(tree)
    assert Enum.all?(tree, &gone?/1)
  end

  test "kill_tree/2 and started_here?/2 leave a process of another run alone" do
    other_run = "other-run-#{System.unique_integer([:positive])}"
    other = spawn_os("sleep", ["600"], [{"CARAVAN_TEST_RUN", other_run}])
    mine = spawn_os("sleep", ["600"])
    # Both exec'd (see above).
    assert BeamNode.eventually(fn -> OsProcesses.started_here?(mine, "sleep") end)
    assert BeamNode.eventually(fn -> OsProcesses.leftovers(other_run) != [] end)

    refute OsProcesses.started_here?(other, "sleep")
    refute OsProcesses.started_here?(mine, "dnsmasq")
    assert OsProcesses.kill_tree(other) == []
    assert alive?(other)
    assert OsProcesses.kill_tree(other, other_run) == [other]
    assert gone?(other)
  end
end
