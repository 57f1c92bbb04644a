defmodule Caravan.Test.Release do
  @moduledoc """
  A real Elixir release of a throwaway app that uses Caravan as a path
  dependency (`Caravan.Test.ThrowawayApp`, the library built for this
  checkout copied in, so the build runs no cargo): built, started as an OS
  process, and reached with `bin/throwaway remote` under script(1). Every
  function registers its clean-up with `on_exit/1`; call them from
  `setup_all` or a test.
  """

  import ExUnit.Assertions, only: [flunk: 1]
  import ExUnit.Callbacks, only: [on_exit: 1]

  alias Caravan.Test.{BeamNode, OsProcesses, ThrowawayApp}

  @typedoc "A started release: its `bin/throwaway`, environment and OS pid."
  @type t :: %{bin: Path.t(), env: [{String.t(), String.t()}], os_pid: pos_integer()}

  @doc """
  Builds the release (`mix release --quiet`, MIX_ENV=prod) in a fresh
  temporary directory named after `label`, with `rel_files` written under
  the app's `rel/` first (`%{"vm.args.eex" => text, ...}`). Returns the
  path of `bin/throwaway`; raises with mix's output when the build fails.
  """
  @spec build(String.t(), %{String.t() => String.t()}) :: Path.t()
  def build(label, rel_files) do
    tmp = Path.join(System.tmp_dir!(), "#{label}_#{System.unique_integer([:positive])}")
    File.rm_rf!(tmp)
    File.mkdir_p!(tmp)
    on_exit(fn -> File.rm_rf!(tmp) end)

    caravan = ThrowawayApp.copy_caravan(tmp, prebuilt_native: true)
    app = ThrowawayApp.new(tmp, "throwaway", caravan)
    File.mkdir_p!(Path.join(app, "rel"))
    for {name, text} <- rel_files, do: File.write!(Path.join([app, "rel", name]), text)

    {out, status} =
      System.cmd("mix", ["release", "--quiet"],
        cd: app,
        env: ThrowawayApp.release_env(),
        stderr_to_stdout: true
      )

    if status != 0, do: raise("mix release failed (#{status}):\n#{out}")
    Path.join(app, "_build/prod/rel/throwaway/bin/throwaway")
  end

  @doc """
  Starts the release (`bin start` with `env`, a list of `{name, value}`
  strings) and waits until it listens on `ip:port` (its distribution port).
  At exit a node still running is stopped (`bin stop`, then killed with
  its children after 10 s). Returns `%{bin, env, os_pid}`.
  """
  @spec start(Path.t(), [{String.t(), String.t()}], :inet.ip4_address(), :inet.port_number()) ::
          t()
  def start(bin, env, ip, port) do
    node_port =
      Port.open({:spawn_executable, bin}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ["start"],
        env: charlist_env(env)
      ])

    {:os_pid, os_pid} = Port.info(node_port, :os_pid)
    gone? = fn -> not File.exists?("/proc/#{os_pid}") end

    on_exit(fn ->
      unless gone?.() do
        System.cmd(bin, ["stop"], env: env, stderr_to_stdout: true)
        unless BeamNode.eventually(gone?, 10_000), do: OsProcesses.kill_tree(os_pid)
      end
    end)

    unless BeamNode.eventually(fn -> BeamNode.listening?(ip, port) end) do
      raise "the release did not listen on #{port}: #{drain(node_port)}"
    end

    %{bin: bin, env: env, os_pid: os_pid}
  end

  @doc """
  Opens `bin remote` under script(1), which gives IEx the terminal it needs
  for --remsh. Returns the port of script(1); at exit, script and
  everything under it (the shell, the helper node) are killed by pid.
  """
  @spec remote_shell(t()) :: port()
  def remote_shell(%{bin: bin, env: env}) do
    script = System.find_executable("script") || flunk("script(1) is missing (bsdutils)")

    shell =
      Port.open({:spawn_executable, script}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ["-qec", "#{bin} remote", "/dev/null"],
        env: charlist_env(env)
      ])

    {:os_pid, script_pid} = Port.info(shell, :os_pid)
    on_exit(fn -> OsProcesses.kill_tree(script_pid) end)
    shell
  end

  @doc """
  Output of `port` until it matches `pattern` (a string or a regex), bounded
  at 30 s; fails the test with what was read otherwise. Returns the text.
  """
  @spec read_until(port(), String.t() | Regex.t()) :: String.t()
  def read_until(port, pattern),
    do: read_until(port, pattern, "", System.monotonic_time(:millisecond) + 30_000)

  defp read_until(port, pattern, acc, deadline) do
    if matches?(acc, pattern) do
      acc
    else
      left = max(deadline - System.monotonic_time(:millisecond), 0)

      receive do
        {^port, {:data, data}} ->
          read_until(port, pattern, acc <> data, deadline)

        {^port, {:exit_status, status}} ->
          flunk("exited (#{status}) before #{inspect(pattern)}:\n#{acc}")
      after
        left -> flunk("no #{inspect(pattern)} within 30 s:\n#{acc}")
      end
    end
  end

  defp matches?(text, %Regex{} = re), do: Regex.match?(re, text)
  defp matches?(text, string), do: String.contains?(text, string)

  defp charlist_env(env),
    do: for({k, v} <- env, do: {String.to_charlist(k), String.to_charlist(v)})

  defp drain(port) do
    receive do
      {^port, {:data, data}} -> data <> drain(port)
    after
      0 -> ""
    end
  end
end
