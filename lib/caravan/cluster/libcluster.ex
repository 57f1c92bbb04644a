defmodule Caravan.Cluster.Libcluster do
  @moduledoc false
  # libcluster's own connect/disconnect path. When libcluster is loaded
  # (Cluster.Strategy, libcluster 3.x), each connect and prune goes through
  # Cluster.Strategy.connect_nodes/4 and disconnect_nodes/4 with one node
  # per call, so libcluster logs "[libcluster:<topology>] connected to ..."
  # and sends its [:libcluster, :connect_node | :disconnect_node, :ok |
  # :error] telemetry exactly as for its own strategies, while Caravan keeps
  # its parallel, bounded connects (each call runs in a connect process of
  # Caravan.Cluster.Connector). Without libcluster, Caravan calls the MFAs
  # itself. Contract (libcluster 3.5.0, lib/strategy/strategy.ex):
  #
  #   connect_nodes(topology, connect_mfa, list_nodes_mfa, nodes) and
  #   disconnect_nodes(topology, disconnect_mfa, list_nodes_mfa, nodes) ->
  #     :ok | {:error, [{node, reason}]}
  #
  # They skip nodes list_nodes lists (connect) or does not list
  # (disconnect), raise when an MFA's function is not exported (so the MFA
  # modules are loaded first) or the connect MFA returns anything but
  # true/false/:ignored; Caravan's callers catch raises.
  #
  # Module names are kept in attributes and called through apply/3:
  # libcluster is optional, and Caravan compiles without it.

  @strategy Cluster.Strategy

  @doc """
  Whether libcluster's `Cluster.Strategy` is loaded, or loadable from a
  loaded `:libcluster` application, with `connect_nodes/4` and
  `disconnect_nodes/4`. Call it once per topology start, not per connect.

  Without libcluster this asks nothing of the code server: looking for a
  module that does not exist makes an interactive-mode VM search every
  directory of its code path, milliseconds before the first lookup
  (`bench/README.md`).
  """
  @spec available?() :: boolean()
  def available? do
    (:code.is_loaded(@strategy) != false or Application.spec(:libcluster, :vsn) != nil) and
      Code.ensure_loaded?(@strategy) and function_exported?(@strategy, :connect_nodes, 4) and
      function_exported?(@strategy, :disconnect_nodes, 4)
  end

  @doc """
  Connects `node` through `Cluster.Strategy.connect_nodes/4`. Returns what
  the connect MFA would have: `true` (connected, or already listed by
  `list_nodes`, which libcluster skips), `false` or `:ignored`; raises what
  libcluster raises.
  """
  @spec connect(atom(), mfa_tuple, mfa_tuple, node()) :: true | false | :ignored | term()
        when mfa_tuple: {module(), atom(), [term()]}
  def connect(topology, connect, list_nodes, node),
    do: through(:connect_nodes, topology, connect, list_nodes, node)

  @doc """
  Disconnects `node` through `Cluster.Strategy.disconnect_nodes/4`.
  Returns `true` when libcluster reports no failure (it logs and reports
  `false` and `:ignored` itself, as "already disconnected" and "not part of
  the network"), else the disconnect MFA's result; raises what libcluster
  raises.
  """
  @spec disconnect(atom(), mfa_tuple, mfa_tuple, node()) :: term()
        when mfa_tuple: {module(), atom(), [term()]}
  def disconnect(topology, disconnect, list_nodes, node),
    do: through(:disconnect_nodes, topology, disconnect, list_nodes, node)

  @doc """
  Whether `config :libcluster, debug: true` is set: libcluster's strategies
  log at debug only then (its Cluster.Logger treats nil, false and
  "false" as off), and so does Caravan when it runs under libcluster.
  """
  @spec debug?() :: boolean()
  def debug?, do: Application.get_env(:libcluster, :debug, false) not in [nil, false, "false"]

  # Cluster.Strategy.connect_nodes/4 or disconnect_nodes/4 for one node:
  # true when libcluster reports no failure, else that node's reason.
  defp through(fun, topology, {m, _, _} = mfa, {lm, _, _} = list_nodes, node) do
    # libcluster checks the MFAs with function_exported?/3, which is false
    # for a module that is not loaded yet.
    Enum.each([m, lm], &Code.ensure_loaded/1)

    case apply(@strategy, fun, [topology, mfa, list_nodes, [node]]) do
      :ok -> true
      {:error, [{^node, reason}]} -> reason
      {:error, other} -> {:libcluster_error, other}
    end
  end
end
