defmodule Caravan.Cluster.Silence do
  @moduledoc false
  # "Silence is not health": counts the consecutive authoritative polls in
  # which DNS listed no instances (NXDOMAIN, NODATA, an empty answer) or
  # only this node. Pure data kept in the strategy's state; the strategy
  # warns once when a streak reaches `@polls` polls and logs at info when
  # it ends.

  # Polls before a streak is reported (a few polls: a node that starts
  # before its peers register is not warned of at once).
  @polls 3

  defstruct kind: nil, count: 0

  @type kind :: :no_instances | :only_self
  @opaque t :: %__MODULE__{kind: kind() | nil, count: non_neg_integer()}

  @doc "No streak."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc "Polls in a streak before it is reported."
  @spec polls() :: pos_integer()
  def polls, do: @polls

  @doc """
  Adds one poll: `found` (the node names DNS listed) when the answer was
  authoritative, or `:unknown` (a lookup failed: neither silence nor
  health, the streak is kept as it is). Returns `{event, silence}`:
  `{:start, kind}` when a streak reaches #{@polls} polls (warn now),
  `{:end, kind}` when a reported streak ends, else nil.
  """
  @spec track(t(), [node()] | :unknown, node()) ::
          {{:start, kind()} | {:end, kind()} | nil, t()}
  def track(silence, :unknown, _self), do: {nil, silence}

  def track(%__MODULE__{} = silence, found, self) do
    kind =
      case found do
        [] -> :no_instances
        [^self] -> :only_self
        _ -> nil
      end

    cond do
      kind == nil and silence.count >= @polls ->
        {{:end, silence.kind}, new()}

      kind == nil ->
        {nil, new()}

      kind == silence.kind ->
        count = silence.count + 1
        event = if count == @polls, do: {:start, kind}
        {event, %{silence | count: count}}

      true ->
        # A different silence (none -> only self): a new streak, and the
        # end of the old one if it was reported.
        event = if silence.count >= @polls, do: {:end, silence.kind}
        {event, %__MODULE__{kind: kind, count: 1}}
    end
  end
end
