defmodule Caravan.Cluster.Act do
  @moduledoc false
  # One job: the "act" of the strategy's "poll, diff, act": applies a
  # poll's result (what changed is logged, Warnings deciding what is news;
  # the silence and unreachable ledgers; membership through
  # Caravan.Cluster.Events; the new nodes to connect) and a connect's
  # result (logged, a failure explained) to the strategy's state
  # (Caravan.Cluster.DnsStrategy). Each function takes and returns it.

  import Caravan.Cluster.Log, only: [log: 3]

  alias Caravan.Cluster.{Connector, Events, Membership, Messages, Silence, Unreachable, Warnings}
  alias Caravan.Diagnose.Probe

  # Acts on a poll's result (Caravan.Cluster.Poll.run/1).
  @spec poll(map(), map()) :: map()
  def poll(%{config: config} = state, result) do
    {warnings, entries} = Warnings.poll(state.warnings, result, config)
    Enum.each(entries, fn {level, message} -> log(level, config, message) end)

    # Forget unreachable nodes DNS no longer lists, so the ledger stays as
    # small as the answer.
    last_poll =
      result
      |> Map.take([:found, :answered, :errors, :invalid])
      |> Map.put(:at, System.monotonic_time())

    state =
      %{
        state
        | warnings: warnings,
          last_poll: last_poll,
          unreachable: Unreachable.keep(state.unreachable, MapSet.new(result.found))
      }
      |> silence(result)
      |> Events.poll(result)

    if Membership.dial?(state.membership),
      do: %{state | connector: Connector.enqueue(state.connector, result.new)},
      else: state
  end

  # Acts on a connect's result (Caravan.Cluster.Connector.handle/2).
  # Under libcluster, libcluster has logged the connect at info already.
  @spec connected(map(), node(), term()) :: map()
  def connected(%{config: config} = state, node, true) do
    log(if(config.libcluster, do: :debug, else: :info), config, "connected to #{node}")
    %{state | unreachable: Unreachable.clear(state.unreachable, node)}
  end

  def connected(%{config: config} = state, node, :ignored) do
    log(:debug, config, "connect to #{node} ignored (this node is not distributed)")
    state
  end

  # A failed connect: the first of a streak, and then one every
  # report_interval, is explained (Caravan.Diagnose.Probe, in its own
  # process, which sends {:caravan_why, node, text} for why/3); the others
  # are debug.
  def connected(%{config: config} = state, node, failure) do
    now = System.monotonic_time(:millisecond)

    case Unreachable.failed(state.unreachable, node, now) do
      {true, unreachable} ->
        owner = self()
        result = Messages.failure(failure)
        spawn(fn -> send(owner, {:caravan_why, node, result <> Probe.why(node)}) end)
        %{state | unreachable: unreachable}

      {false, _} ->
        log(:debug, config, "cannot connect to #{node}: #{inspect(failure)}")
        state
    end
  end

  # The explanation of a failed connect, at warning.
  @spec why(map(), node(), String.t()) :: map()
  def why(%{config: config} = state, node, why) do
    log(
      :warning,
      config,
      "cannot connect to #{node}: #{why} " <>
        "(reported again every #{div(config.report_interval, 1000)} s while DNS lists it " <>
        "and it stays unreachable)"
    )

    state
  end

  # Silence is not health: a streak of polls that found no instances, or
  # only this node, is a warning once (Caravan.Cluster.Silence).
  defp silence(%{config: config} = state, result) do
    found = if result.authoritative?, do: result.found, else: :unknown
    {event, silence} = Silence.track(state.silence, found, node())
    state = %{state | silence: silence}

    case event do
      {:start, kind} ->
        log(:warning, config, "#{Messages.silence(kind, config)}")
        state

      {:end, _kind} ->
        log(:info, config, "DNS lists #{length(result.found)} node(s) again")

        state

      nil ->
        state
    end
  end
end
