defmodule Caravan.Test.TelemetryDouble do
  @moduledoc false
  # A test double of the telemetry library (hex is not reachable here, so
  # the real one cannot be installed), under a name of its own so it never
  # collides with the real `:telemetry`: execute/3 hands each event to the
  # handlers Caravan.Test.Telemetry.attach/1 registered, as the real
  # :telemetry.execute/3 does for attached handlers.
  def execute(event, measurements, metadata) do
    for handler <- :persistent_term.get(Caravan.Test.Telemetry, []),
        do: handler.(event, measurements, metadata, nil)

    :ok
  end
end

defmodule Caravan.Test.Telemetry do
  @moduledoc """
  Attaches handlers to the telemetry double (`Caravan.Test.TelemetryDouble`),
  which Caravan.Telemetry then calls in place of `:telemetry`.
  """

  @doc "Points Caravan.Telemetry at the double and adds `handler` (a 4-arity fun)."
  def attach(handler) do
    {:module, _} = Code.ensure_loaded(Caravan.Test.TelemetryDouble)
    Caravan.Telemetry.__put_module__(Caravan.Test.TelemetryDouble)
    :persistent_term.put(__MODULE__, [handler | :persistent_term.get(__MODULE__, [])])
  end

  @doc "Removes every handler."
  def detach, do: :persistent_term.erase(__MODULE__)
end
