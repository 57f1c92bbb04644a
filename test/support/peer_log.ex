defmodule Caravan.Test.PeerLog do
  @moduledoc """
  What the recorders that run on a peer node share (`Caravan.Test.Recorder`,
  `LevelLog`, `Libcluster`, `Lab.Probe`): a registered collector process,
  a `:logger` handler that feeds it, and asking it for what it holds.
  """

  @doc """
  Spawns the collector: it registers as `name`, runs `init` (e.g.
  `:net_kernel.monitor_nodes/2`), then `loop` for good. Returns `:ok`
  once it is registered; raises naming `name` when it did not start in
  10 s.
  """
  @spec start_collector(atom(), function(), function()) :: :ok
  def start_collector(name, init, loop) do
    parent = self()

    spawn(fn ->
      Process.register(self(), name)
      init.()
      send(parent, {name, :started})
      loop.()
    end)

    receive do
      {^name, :started} -> :ok
    after
      10_000 -> raise "#{inspect(name)} did not start"
    end
  end

  @doc """
  Starts Elixir's Logger, drops progress reports, sets every `:logger`
  handler already there to `console_level` (OTP's `default`, through which
  Elixir 1.15+ prints, or Elixir 1.14's `Logger` handler in front of the
  console backend) and adds `module` (its `log/2`) as handler `name` at
  every level; with `primary_level`, sets the primary level to it. Logger
  is started first, so that its start does not reset what follows.
  Returns `:ok`.
  """
  @spec capture(atom(), module(), Logger.level(), Logger.level() | nil) :: :ok
  def capture(name, module, console_level, primary_level \\ :debug) do
    {:ok, _} = Application.ensure_all_started(:logger)
    :logger.add_primary_filter(:no_progress, {&:logger_filters.progress/2, :stop})

    for id <- :logger.get_handler_ids(),
        do: :ok = :logger.set_handler_config(id, :level, console_level)

    :ok = :logger.add_handler(name, module, %{level: :all})
    if primary_level, do: :ok = :logger.set_primary_config(:level, primary_level)
    :ok
  end

  @doc "A `:logger` event's message as a string."
  @spec text(term()) :: String.t()
  def text({:string, chardata}), do: IO.chardata_to_string(chardata)
  def text({:report, report}), do: inspect(report)
  def text({format, args}), do: format |> :io_lib.format(args) |> IO.chardata_to_string()

  @doc """
  Sends `{request, self()}` to the collector `name` and returns its reply
  `{name, answer}`'s answer; raises naming `name` after 10 s.
  """
  @spec ask(atom(), atom()) :: term()
  def ask(name, request) do
    send(name, {request, self()})

    receive do
      {^name, answer} -> answer
    after
      10_000 -> raise "#{inspect(name)} did not answer"
    end
  end
end
