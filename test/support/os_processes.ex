defmodule Caravan.Test.OsProcesses do
  @moduledoc """
  The OS processes a test run starts (BeamNode peers, dnsmasq, releases and
  their `rem-*`/`rpc-*` helper nodes, `script(1)` shells), found through
  `/proc` (Linux), and the end-of-suite check that none is left running.

  `mark_run/0` puts a run-unique tag in this VM's environment
  (`CARAVAN_TEST_RUN`), which every OS process started afterwards inherits,
  children of children included. `leftovers/1` lists the live processes
  carrying this run's tag: processes of other runs or other users of the
  machine carry another tag or none, so they are never counted, and never
  killed.
  """

  @var "CARAVAN_TEST_RUN"
  # The VM's own port programs: started by this VM, not by a test.
  @vm_helpers ["erl_child_setup", "inet_gethost", "memsup", "cpu_sup"]

  @type proc :: %{pid: pos_integer(), comm: String.t(), cmdline: String.t()}

  @doc """
  Tags this run: sets `CARAVAN_TEST_RUN` in this VM's environment to a
  value no other run has (OS pid, time in ns, a random number) and returns
  it.
  """
  @spec mark_run() :: String.t()
  def mark_run do
    tag = "#{System.pid()}-#{System.os_time(:nanosecond)}-#{:rand.uniform(1_000_000_000)}"

    System.put_env(@var, tag)
    tag
  end

  @doc """
  Live processes (not zombies) whose environment has `CARAVAN_TEST_RUN=tag`,
  other than this VM and its own port programs, by pid.
  """
  @spec leftovers(String.t()) :: [proc()]
  def leftovers(tag) do
    own = String.to_integer(System.pid())

    for pid <- all_pids(),
        pid != own,
        tagged?(pid, tag),
        proc = describe(pid),
        proc != nil,
        proc.comm not in @vm_helpers,
        do: proc
  end

  @doc """
  The end-of-suite check: waits (up to `wait_ms`) for this run's processes
  to exit, as stopped nodes take a moment to; any still running then is
  printed (pid, command line), killed with SIGKILL, and returned as
  `{:error, procs}`. `:ok` when none is left.
  """
  @spec check(String.t(), non_neg_integer()) :: :ok | {:error, [proc()]}
  def check(tag, wait_ms \\ 10_000) do
    case wait_gone(tag, System.monotonic_time(:millisecond) + wait_ms) do
      [] ->
        :ok

      procs ->
        IO.puts(:stderr, """

        Leftover processes: #{length(procs)} OS process(es) this test run started \
        (#{@var}=#{tag}) still run after every test ended. A test that starts a node, \
        a DNS server or a release must stop it in on_exit/1. Killing them now:
        #{Enum.map_join(procs, "\n", &"  pid #{&1.pid} (#{&1.comm}): #{&1.cmdline}")}
        """)

        Enum.each(procs, &kill/1)
        {:error, procs}
    end
  end

  @doc """
  Kills `os_pid` and every descendant it has now (SIGKILL), e.g. `script(1)`
  and the helper node its shell started, but only those carrying the run
  tag `tag` (this run's by default): a pid whose process has exited may
  already belong to another program (pids wrap at 32768 here), which must
  not be touched. Returns the pids signalled.
  """
  @spec kill_tree(pos_integer(), String.t() | nil) :: [pos_integer()]
  def kill_tree(os_pid, tag \\ System.get_env(@var)) do
    pids = Enum.filter([os_pid | descendants(os_pid)], &tagged?(&1, tag))
    Enum.each(pids, &kill(%{pid: &1}))
    pids
  end

  @doc """
  True when `os_pid` is a live process named `comm` (as in /proc/<pid>/comm)
  that this test run started (it carries this run's tag); outside a tagged
  run (the demo), when it is a live process named `comm`. For stopping a
  process by pid without signalling a stranger that reuses the pid.
  """
  @spec started_here?(pos_integer(), String.t()) :: boolean()
  def started_here?(os_pid, comm) do
    case describe(os_pid) do
      %{comm: ^comm} ->
        case System.get_env(@var) do
          nil -> true
          tag -> tagged?(os_pid, tag)
        end

      _ ->
        false
    end
  end

  @doc """
  True while `os_pid` runs: false once it has exited (a zombie included,
  whose sockets and files are closed) or is gone. While a process exits, its
  environment reads empty before its files are closed, so "no longer
  tagged" does not mean "exited": wait on this instead.
  """
  @spec running?(pos_integer()) :: boolean()
  def running?(os_pid), do: stat(os_pid) != nil

  defp tagged?(_pid, nil), do: false

  defp tagged?(pid, tag) do
    case read("/proc/#{pid}/environ") do
      nil -> false
      env -> String.contains?("\0" <> env, "\0#{@var}=#{tag}\0")
    end
  end

  @doc "The pids of every live descendant of `os_pid` (children, their children...)."
  @spec descendants(pos_integer()) :: [pos_integer()]
  def descendants(os_pid) do
    parents = for pid <- all_pids(), ppid = ppid(pid), ppid != nil, do: {pid, ppid}
    collect([os_pid], parents, [])
  end

  defp collect([], _parents, acc), do: acc

  defp collect([pid | rest], parents, acc) do
    children = for {child, ^pid} <- parents, do: child
    collect(children ++ rest, parents, acc ++ children)
  end

  defp wait_gone(tag, deadline) do
    case leftovers(tag) do
      [] ->
        []

      procs ->
        if System.monotonic_time(:millisecond) >= deadline do
          procs
        else
          Process.sleep(200)
          wait_gone(tag, deadline)
        end
    end
  end

  defp kill(%{pid: pid}),
    do: System.cmd("kill", ["-KILL", to_string(pid)], stderr_to_stdout: true)

  defp all_pids do
    case File.ls("/proc") do
      {:ok, entries} ->
        for entry <- entries, {pid, ""} <- [Integer.parse(entry)], do: pid

      {:error, reason} ->
        raise "cannot list /proc (#{inspect(reason)}): the leftover check needs Linux's /proc"
    end
  end

  # State and parent pid from /proc/<pid>/stat; nil for zombies and
  # processes gone meanwhile. The command name (field 2) may hold spaces
  # and parentheses, so the fields are read after its last ")".
  defp stat(pid) do
    with stat when is_binary(stat) <- read("/proc/#{pid}/stat"),
         [state, ppid | _] <- stat |> String.split(") ") |> List.last() |> String.split(" "),
         true <- state not in ["Z", "X"] do
      String.to_integer(ppid)
    else
      _ -> nil
    end
  end

  defp ppid(pid), do: stat(pid)

  defp describe(pid) do
    with ppid when ppid != nil <- stat(pid),
         comm when is_binary(comm) <- read("/proc/#{pid}/comm"),
         cmdline when is_binary(cmdline) <- read("/proc/#{pid}/cmdline") do
      %{
        pid: pid,
        comm: String.trim(comm),
        cmdline: cmdline |> String.split("\0", trim: true) |> Enum.join(" ")
      }
    else
      _ -> nil
    end
  end

  defp read(path) do
    case File.read(path) do
      {:ok, data} -> data
      {:error, _} -> nil
    end
  end
end
