defmodule Caravan.Cluster.Unreachable do
  @moduledoc false
  # When to say why a node DNS lists cannot be connected: the first failure
  # of a streak, then again at most once per `interval` ms while it stays
  # unreachable (not once forever, not at every poll). Pure data kept in
  # the strategy's state; times are monotonic ms.

  # Default re-report interval: 5 minutes.
  @interval 300_000

  defstruct interval: @interval, last: %{}

  @opaque t :: %__MODULE__{interval: pos_integer(), last: %{node() => integer()}}

  @doc "Nothing reported yet; `interval` ms between reports about one node."
  @spec new(pos_integer()) :: t()
  def new(interval \\ @interval), do: %__MODULE__{interval: interval}

  @doc "The re-report interval, ms."
  @spec interval(t()) :: pos_integer()
  def interval(%__MODULE__{interval: interval}), do: interval

  @doc """
  A connect to `node` failed at `now` (ms): `{true, t}` when it is to be
  reported (first failure of a streak, or `interval` ms since the last
  report), else `{false, t}`.
  """
  @spec failed(t(), node(), integer()) :: {boolean(), t()}
  def failed(%__MODULE__{last: last} = t, node, now) do
    case last do
      %{^node => at} when now - at < t.interval -> {false, t}
      _ -> {true, %{t | last: Map.put(last, node, now)}}
    end
  end

  @doc "`node` connected, or left DNS: its streak ends."
  @spec clear(t(), node()) :: t()
  def clear(%__MODULE__{} = t, node), do: %{t | last: Map.delete(t.last, node)}

  @doc "Keeps only the nodes of `listed` (the nodes DNS lists now)."
  @spec keep(t(), MapSet.t(node())) :: t()
  def keep(%__MODULE__{} = t, listed),
    do: %{t | last: Map.filter(t.last, fn {node, _} -> MapSet.member?(listed, node) end)}
end
