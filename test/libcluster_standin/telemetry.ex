# The :telemetry stand-in that comes with the libcluster stand-in (the real
# libcluster depends on the real telemetry library; neither can be
# installed here, hex.pm is not reachable). Compiled and loaded only
# together with cluster_strategy.ex by Caravan.Test.Libcluster, and purged
# with it, so no other test sees a module named :telemetry. execute/3
# hands each event to the handlers attached through Caravan.Test.Telemetry,
# as the real :telemetry.execute/3 does for attached handlers.
defmodule :telemetry do
  @moduledoc false
  def execute(event, measurements, metadata),
    do: Caravan.Test.TelemetryDouble.execute(event, measurements, metadata)
end
