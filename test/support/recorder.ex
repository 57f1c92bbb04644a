defmodule Caravan.Test.Recorder do
  @moduledoc """
  Runs on a peer node (`Caravan.Test.BeamNode.call/4`) and records what a
  fault test asserts on: every nodeup/nodedown the node sees
  (`:net_kernel.monitor_nodes/2`, visible and hidden nodes) and every
  `[caravan]` log line, at any level, through a `:logger` handler.
  """

  alias Caravan.Test.PeerLog

  @name :caravan_test_recorder

  @doc """
  Starts the recorder on this node (and Elixir's Logger), with the primary
  Logger level at `:debug` so each failed lookup (a warning once, then
  debug) is recorded; the console keeps printing only warnings and above.
  Returns `:ok`.
  """
  def start do
    :ok =
      PeerLog.start_collector(
        @name,
        fn -> :ok = :net_kernel.monitor_nodes(true, node_type: :all) end,
        fn -> loop([], []) end
      )

    PeerLog.capture(@name, __MODULE__, :warning)
  end

  @doc "`{node_events, caravan_logs}`, oldest first: `{:nodeup | :nodedown, node}` and log strings."
  def events, do: PeerLog.ask(@name, :events)

  @doc "How many recorded `[caravan]` lines contain `text`."
  def count(text), do: events() |> elem(1) |> Enum.count(&String.contains?(&1, text))

  @doc """
  True when `pid` names a live process of this node, as the runtime sees
  it: a pid of an earlier incarnation of this node name (another creation)
  is not local, so `:erlang.process_info/2` refuses it.
  """
  def local_process?(pid) do
    :erlang.process_info(pid, :status) != :undefined
  rescue
    ArgumentError -> false
  end

  @doc false
  # :logger handler callback.
  def log(%{msg: msg}, _config) do
    text = PeerLog.text(msg)
    if String.contains?(text, "[caravan]"), do: send(@name, {:log, text})
  catch
    _, _ -> :ok
  end

  defp loop(nodes, logs) do
    receive do
      {:nodeup, node, _info} ->
        loop([{:nodeup, node} | nodes], logs)

      {:nodedown, node, _info} ->
        loop([{:nodedown, node} | nodes], logs)

      {:log, text} ->
        loop(nodes, [text | logs])

      {:events, from} ->
        send(from, {@name, {Enum.reverse(nodes), Enum.reverse(logs)}})
        loop(nodes, logs)
    end
  end
end
