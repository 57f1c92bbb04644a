defmodule :telemetry do
  @moduledoc false
  # A test double of the telemetry library (hex is not reachable here, so
  # the real one cannot be installed): execute/3 hands each event to the
  # handlers Caravan.Test.Telemetry.attach/1 registered, as the real
  # :telemetry does for attached handlers.
  def execute(event, measurements, metadata) do
    for handler <- :persistent_term.get(Caravan.Test.Telemetry, []),
        do: handler.(event, measurements, metadata, nil)

    :ok
  end
end

defmodule Caravan.Test.Telemetry do
  @moduledoc """
  Attaches handlers to the `:telemetry` test double (see test/support/telemetry.ex).
  """

  @doc "Loads the `:telemetry` double and adds `handler` (a 4-arity fun)."
  def attach(handler) do
    {:module, :telemetry} = Code.ensure_loaded(:telemetry)
    :persistent_term.put(__MODULE__, [handler | :persistent_term.get(__MODULE__, [])])
  end

  @doc "Removes every handler."
  def detach, do: :persistent_term.erase(__MODULE__)
end
