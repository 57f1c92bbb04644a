defmodule Caravan.Telemetry do
  @moduledoc """
  `:telemetry` events, sent only when the `:telemetry` library is loaded;
  Caravan does not depend on it, and without it each call is a no-op.

  Events (durations in `:native` time units; convert with
  `System.convert_time_unit/3`):

    * `[:caravan, :lookup]` - one DNS query of a topology.
      Measurements: `%{duration: integer, records: non_neg_integer}`.
      Metadata: `%{topology: atom, query: String.t, result: :ok | :error,
      reason: nil | term}` (`records` counts the usable peers; NXDOMAIN and
      NODATA are `:ok` with 0 records).
    * `[:caravan, :connect]` - one connect attempt to a node found in DNS.
      Measurements: `%{duration: integer}`. Metadata: `%{topology: atom,
      node: node, result: :ok | :error, reason: nil | term}`.
    * `[:caravan, :disconnect]` - a node pruned because DNS no longer lists
      it (`prune: true`). Measurements: `%{system_time: integer}`.
      Metadata: `%{topology: atom, node: node, reason: :pruned}`.

  Under libcluster (see `Caravan.Cluster.DnsStrategy`, "Under
  libcluster"), libcluster's own `[:libcluster, :connect_node |
  :disconnect_node, :ok | :error]` events are sent too, by libcluster, for
  every connect and prune.

  Attach with `:telemetry.attach/4` as usual.
  """

  @doc """
  Sends `event` with `measurements` and `metadata` (both maps) through
  `:telemetry.execute/3` when the `:telemetry` module is loaded. Returns
  `:ok` either way; a failing handler is `:telemetry`'s business.
  """
  @spec execute([atom(), ...], map(), map()) :: :ok
  def execute(event, measurements, metadata) do
    # module_loaded/1 is a cheap check that never searches the code path.
    if :erlang.module_loaded(:telemetry) do
      apply(:telemetry, :execute, [event, measurements, metadata])
    end

    :ok
  end
end
