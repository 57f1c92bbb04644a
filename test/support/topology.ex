defmodule Caravan.Test.Topology do
  @moduledoc """
  What a strategy test needs in place of libcluster, which is not
  installable here (no hex): a stand-in for `%Cluster.Strategy.State{}` with
  the same fields, so tests call `start_link([state])` exactly as
  `Cluster.Supervisor` does, and connect/disconnect/list_nodes MFAs that
  report to the test process instead of touching the (undistributed) test
  runner. Real connects are tested with real nodes elsewhere.
  """

  defmodule State do
    @moduledoc "Stand-in for libcluster's `%Cluster.Strategy.State{}` (same fields)."
    defstruct topology: nil,
              connect: {:net_kernel, :connect_node, []},
              disconnect: {:erlang, :disconnect_node, []},
              list_nodes: {:erlang, :nodes, [:connected]},
              meta: nil,
              config: []
  end

  @doc """
  A state whose connect and disconnect send `{:connect, node}` and
  `{:disconnect, node}` to `test_pid`, and whose list_nodes answers
  `connected` (a list, or an Agent pid holding one).
  """
  def state(config, test_pid, connected \\ []) do
    %State{
      topology: :test,
      connect: {__MODULE__, :record_connect, [test_pid]},
      disconnect: {__MODULE__, :record_disconnect, [test_pid]},
      list_nodes: {__MODULE__, :connected, [connected]},
      config: config
    }
  end

  @doc false
  def record_connect(test_pid, node) do
    send(test_pid, {:connect, node})
    true
  end

  @doc false
  def record_disconnect(test_pid, node) do
    send(test_pid, {:disconnect, node})
    true
  end

  @doc false
  def connected(nodes) when is_list(nodes), do: nodes
  def connected(agent) when is_pid(agent), do: Agent.get(agent, & &1)
end
