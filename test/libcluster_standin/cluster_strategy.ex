# A STAND-IN for libcluster 3.5.0's `Cluster.Strategy` and
# `Cluster.Strategy.State`, for the tests only. The real package is on hex.pm,
# which is not reachable here, so this file implements the contract libcluster
# documents and its source behaves by (lib/strategy/strategy.ex,
# lib/strategy/state.ex, lib/logger.ex at tag 3.5.0), written for Caravan's
# tests, not copied. It is NOT in the test build (mix.exs compiles
# test/support only): Caravan.Test.Libcluster compiles it on demand, loads it
# into the test VM or a peer node and purges it afterwards, so every other
# test runs without `Cluster.Strategy`, as a user without libcluster would.
#
# The contract, as hostile as the real thing:
#   * connect_nodes(topology, connect_mfa, list_nodes_mfa, nodes) asks
#     list_nodes once, skips the nodes it lists and this node, and calls the
#     connect MFA (node appended to its args) for each of the rest, one after
#     the other. `true` is a success; `false` (unreachable) and `:ignored`
#     (this node is not distributed) are failures; any other return value
#     raises (libcluster matches those three with `case`, no catch-all).
#     Returns :ok, or {:error, [{node, false | :ignored}]} for the failures.
#   * disconnect_nodes(topology, disconnect_mfa, list_nodes_mfa, nodes) does
#     the same for the nodes list_nodes DOES list: `true` is a success;
#     `false` and `:ignored` are logged and telemetered as failures but not
#     returned; any other value is returned as {node, value}.
#   * A function of an MFA that is not exported (function_exported?/3, so a
#     module that is not loaded counts as missing) raises a RuntimeError
#     "<mod>.<fun>/<arity> is undefined!".
#   * Each outcome is logged "[libcluster:<topology>] ..." (info for
#     successes, warning for failures) and reported through :telemetry:
#     [:libcluster, :connect_node | :disconnect_node, :ok] with
#     %{duration: native_time} and %{node, topology};
#     [..., :error] with %{} and %{node, topology, reason} where reason is
#     :unreachable, :not_part_of_network, :already_disconnected or, for an
#     unexpected disconnect result, inspect(result).
#   * (libcluster's strategies log at debug only with
#     `config :libcluster, debug: true`; that lives in its internal
#     Cluster.Logger, which Caravan does not call, so it is not here.)

defmodule Cluster.Strategy.State do
  @moduledoc false
  # Stand-in (see the top of this file): libcluster's per-topology state.
  defstruct topology: nil, connect: nil, disconnect: nil, list_nodes: nil, meta: nil, config: []
end

defmodule Cluster.Strategy do
  @moduledoc false
  # Stand-in (see the top of this file).
  require Logger

  def connect_nodes(topology, {mod, fun, args}, {_, _, _} = list_nodes, nodes)
      when is_list(nodes) do
    listed = listed(list_nodes)
    wanted = Enum.reject(Enum.uniq(nodes), &(&1 == Node.self() or &1 in listed))

    failures =
      for node <- wanted, reduce: [] do
        failures ->
          call_args = args ++ [node]
          exported!(mod, fun, length(call_args))
          started = System.monotonic_time()

          case apply(mod, fun, call_args) do
            true ->
              ok_event(:connect_node, started, node, topology)
              Logger.info("[libcluster:#{topology}] connected to #{inspect(node)}")
              failures

            false ->
              error_event(:connect_node, node, topology, :unreachable)
              Logger.warning("[libcluster:#{topology}] unable to connect to #{inspect(node)}")
              [{node, false} | failures]

            :ignored ->
              error_event(:connect_node, node, topology, :not_part_of_network)

              Logger.warning(
                "[libcluster:#{topology}] unable to connect to #{inspect(node)}: not part of network"
              )

              [{node, :ignored} | failures]
          end
      end

    result(failures)
  end

  def disconnect_nodes(topology, {mod, fun, args}, {_, _, _} = list_nodes, nodes)
      when is_list(nodes) do
    listed = listed(list_nodes)
    wanted = Enum.filter(Enum.uniq(nodes), &(&1 != Node.self() and &1 in listed))

    failures =
      for node <- wanted, reduce: [] do
        failures ->
          call_args = args ++ [node]
          exported!(mod, fun, length(call_args))
          started = System.monotonic_time()

          case apply(mod, fun, call_args) do
            true ->
              ok_event(:disconnect_node, started, node, topology)
              Logger.info("[libcluster:#{topology}] disconnected from #{inspect(node)}")
              failures

            false ->
              error_event(:disconnect_node, node, topology, :already_disconnected)

              Logger.warning(
                "[libcluster:#{topology}] disconnect from #{inspect(node)} failed: already disconnected"
              )

              failures

            :ignored ->
              error_event(:disconnect_node, node, topology, :not_part_of_network)

              Logger.warning(
                "[libcluster:#{topology}] disconnect from #{inspect(node)} failed: not part of the network"
              )

              failures

            other ->
              error_event(:disconnect_node, node, topology, inspect(other))

              Logger.warning(
                "[libcluster:#{topology}] disconnect from #{inspect(node)} failed with: #{inspect(other)}"
              )

              [{node, other} | failures]
          end
      end

    result(failures)
  end

  defp listed({mod, fun, args}) do
    exported!(mod, fun, length(args))
    apply(mod, fun, args)
  end

  defp exported!(mod, fun, arity) do
    unless function_exported?(mod, fun, arity), do: raise("#{mod}.#{fun}/#{arity} is undefined!")
  end

  defp ok_event(what, started, node, topology) do
    :telemetry.execute(
      [:libcluster, what, :ok],
      %{duration: System.monotonic_time() - started},
      %{node: node, topology: topology}
    )
  end

  defp error_event(what, node, topology, reason) do
    :telemetry.execute([:libcluster, what, :error], %{}, %{
      node: node,
      topology: topology,
      reason: reason
    })
  end

  defp result([]), do: :ok
  defp result(failures), do: {:error, Enum.reverse(failures)}
end
