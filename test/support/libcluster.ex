defmodule Caravan.Test.Libcluster do
  @moduledoc """
  Puts the libcluster STAND-IN (test/libcluster_standin/cluster_strategy.ex;
  hex.pm, and so the real libcluster, is not reachable here) into the test
  VM or a peer node for the tests that want it, and takes it out again, so
  every other test runs with no `Cluster.Strategy` loaded, as a user without
  libcluster does. Also records what libcluster reports: its
  `[:libcluster, ...]` telemetry events (through the `:telemetry` stand-in loaded
  with it, test/libcluster_standin/telemetry.ex) and its `[libcluster:<topology>]` log lines.
  """

  @sources Enum.map(
             ["telemetry.ex", "cluster_strategy.ex"],
             &Path.expand("../libcluster_standin/" <> &1, __DIR__)
           )
  @modules [Cluster.Strategy, Cluster.Strategy.State, :telemetry]
  @name :caravan_test_libcluster

  @doc """
  Compiles the stand-in and returns its modules' object code,
  `[{module, binary}]`, leaving nothing loaded in this VM.
  """
  def compile do
    binaries = Enum.flat_map(@sources, &Code.compile_file/1)
    unload()
    binaries
  end

  @doc "Loads the stand-in into this VM. Returns `:ok`."
  def load do
    for {module, binary} <- compile(),
        do: {:module, ^module} = :code.load_binary(module, ~c"libcluster_standin", binary)

    :ok
  end

  @doc "Loads the stand-in into a peer node (`Caravan.Test.BeamNode`). Returns `:ok`."
  def load_on(peer) do
    for {module, binary} <- compile() do
      {:module, ^module} =
        Caravan.Test.BeamNode.call(peer, :code, :load_binary, [
          module,
          ~c"libcluster_standin",
          binary
        ])
    end

    :ok
  end

  @doc "Purges the stand-in from this VM; afterwards `Cluster.Strategy` cannot be loaded."
  def unload do
    for module <- @modules do
      :code.purge(module)
      :code.delete(module)
      :code.purge(module)
    end

    false = Code.ensure_loaded?(Cluster.Strategy)
    :ok
  end

  @doc """
  Starts recording on this node (call it on a peer with
  `BeamNode.call(peer, #{inspect(__MODULE__)}, :record, [])`): every
  `[:libcluster | _]` telemetry event and every log line containing
  `[libcluster:` at any level (the primary Logger level is set to `:debug`;
  OTP's default handler keeps printing warnings and above). Returns `:ok`.
  """
  def record do
    :ok = Caravan.Test.PeerLog.start_collector(@name, fn -> :ok end, fn -> loop([], []) end)
    :ok = Caravan.Test.PeerLog.capture(@name, __MODULE__, :warning)
    Caravan.Test.Telemetry.attach(&__MODULE__.event/4)
    :ok
  end

  @doc "Stops recording in this VM (handler and process). Returns `:ok`."
  def stop_recording do
    :logger.remove_handler(@name)
    Caravan.Test.Telemetry.detach()
    if pid = Process.whereis(@name), do: Process.exit(pid, :kill)
    :ok
  end

  @doc """
  `{events, logs}` recorded so far, oldest first: `{event_name,
  measurements, metadata}` and `{level, text}`.
  """
  def recorded, do: Caravan.Test.PeerLog.ask(@name, :get)

  @doc false
  # :telemetry handler (an external fun, so it also works on a peer node).
  def event([:libcluster | _] = event, measurements, metadata, _config),
    do: send(@name, {:event, {event, measurements, metadata}})

  def event(_event, _measurements, _metadata, _config), do: :ok

  @doc false
  # :logger handler callback.
  def log(%{level: level, msg: msg}, _config) do
    text = Caravan.Test.PeerLog.text(msg)
    if String.contains?(text, "[libcluster:"), do: send(@name, {:log, {level, text}})
  catch
    _, _ -> :ok
  end

  defp loop(events, logs) do
    receive do
      {:event, event} ->
        loop([event | events], logs)

      {:log, line} ->
        loop(events, [line | logs])

      {:get, from} ->
        send(from, {@name, {Enum.reverse(events), Enum.reverse(logs)}})
        loop(events, logs)
    end
  end
end
