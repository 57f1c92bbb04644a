defmodule Caravan.Test.LevelLog do
  @moduledoc """
  Runs on a peer node (`Caravan.Test.BeamNode.call/4`): records every
  `[caravan]` log line with its level through a `:logger` handler, so a
  test can assert what a person sees at `:warning` (and that repeats went
  to `:debug`). Also starts a strategy under a supervisor that traps
  exits, so a refused config comes back as `{:error, reason}`.
  """

  alias Caravan.Test.PeerLog

  @name :caravan_test_level_log

  @doc "Starts recording (Logger started, primary level `:debug`). Returns `:ok`."
  def start do
    :ok = PeerLog.start_collector(@name, fn -> :ok end, fn -> loop([]) end)
    # The console keeps printing only warnings and above.
    PeerLog.capture(@name, __MODULE__, :warning)
  end

  @doc "`[{level, text}]`, oldest first."
  def lines, do: PeerLog.ask(@name, :lines)

  @doc "The recorded lines at `level` that contain `text`."
  def matching(level, text),
    do: for({^level, line} <- lines(), String.contains?(line, text), do: line)

  @doc """
  Starts `Caravan.Cluster.DnsStrategy` with `opts` under a supervisor
  owned by a long-lived process; returns `{:ok, strategy_pid}` or
  `{:error, reason}` (a refused config).
  """
  def start_strategy(opts) do
    parent = self()

    spawn(fn ->
      Process.flag(:trap_exit, true)

      case Supervisor.start_link([{Caravan.Cluster.DnsStrategy, opts}], strategy: :one_for_one) do
        {:ok, sup} ->
          [{_, pid, _, _}] = Supervisor.which_children(sup)
          send(parent, {:started, {:ok, pid}})
          Process.sleep(:infinity)

        {:error, reason} ->
          send(parent, {:started, {:error, reason}})
      end
    end)

    receive do
      {:started, result} -> result
    after
      10_000 -> {:error, :timeout}
    end
  end

  @doc false
  # :logger handler callback.
  def log(%{level: level, msg: msg}, _config) do
    text = PeerLog.text(msg)
    if String.contains?(text, "[caravan]"), do: send(@name, {:log, level, text})
  catch
    _, _ -> :ok
  end

  defp loop(lines) do
    receive do
      {:log, level, text} ->
        loop([{level, text} | lines])

      {:lines, from} ->
        send(from, {@name, Enum.reverse(lines)})
        loop(lines)
    end
  end
end
