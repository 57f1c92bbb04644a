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
      it (`prune: true`): asked to leave (`reason: :asked_to_leave`), or
      disconnected from here after it did not (`reason: :pruned`).
      Measurements: `%{system_time: integer}`.
      Metadata: `%{topology: atom, node: node, reason: :asked_to_leave | :pruned}`.

  Under libcluster (see `Caravan.Cluster.DnsStrategy`, "Under
  libcluster"), libcluster's own `[:libcluster, :connect_node |
  :disconnect_node, :ok | :error]` events are sent too, by libcluster, for
  every connect and prune.

  Attach with `:telemetry.attach/4` as usual.
  """

  @module_key {__MODULE__, :module}

  # Private like execute/3: the events are documented above, not as types.
  # An event's name: one of the three [:caravan, _] events.
  @typep event :: [:caravan | :lookup | :connect | :disconnect, ...]
  # Integers; :duration in :native time units.
  @typep measurements :: %{
           optional(:duration) => integer(),
           optional(:records) => non_neg_integer(),
           optional(:system_time) => integer()
         }

  # As listed for each event above.
  @typep metadata :: %{
           required(:topology) => atom(),
           optional(:node) => node(),
           optional(:query) => String.t(),
           optional(:result) => :ok | :error,
           optional(:reason) => term()
         }

  @doc false
  # Sends `event` with `measurements` and `metadata` through
  # `:telemetry.execute/3` when the `:telemetry` module is loaded. Returns
  # `:ok` either way; a failing handler is `:telemetry`'s business.
  @spec execute(event(), measurements(), metadata()) :: :ok
  def execute(event, measurements, metadata) do
    module = :persistent_term.get(@module_key, :telemetry)

    # module_loaded/1 is a cheap check that never searches the code path.
    if :erlang.module_loaded(module) do
      apply(module, :execute, [event, measurements, metadata])
    end

    :ok
  end

  @doc false
  # The tests' telemetry double stands in for :telemetry through this.
  @spec __put_module__(module()) :: :ok
  def __put_module__(module) when is_atom(module), do: :persistent_term.put(@module_key, module)
end
