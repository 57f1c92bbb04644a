defmodule Caravan.Cluster.Membership do
  @moduledoc false
  # The membership decisions of one topology, as pure functions over a
  # struct: what DNS lists, which nodes it no longer lists (departed), and
  # whether this node itself has been dropped. The strategy
  # (Caravan.Cluster.DnsStrategy) feeds it each poll's answer and nodeup
  # events and carries out what it decides: asking a departed node to
  # leave, cancelling connects, leaving, not dialing.
  #
  # Why a departed node is *asked to leave* rather than disconnected: with
  # OTP 25's defaults (connect_all true, prevent_overlapping_partitions
  # true), a node that sees a connection go down (erlang:disconnect_node/1
  # on either side) multicasts {lost_connection, Me, Other} and every
  # member that still has Other drops it. When a member drops the departed
  # node D, D sees that member go down too and multicasts the mirror
  # message, so the others drop the member: collateral nodedowns between
  # healthy nodes (kernel's global.erl, "Prevent Overlapping Partitions
  # Algorithm"). global:disconnect/0 (OTP 25.1+), run on D, disconnects D
  # from every node while treating each nodedown as ignore_node, so D
  # multicasts nothing; the members' own lost_connection messages name only
  # D. So D leaves by itself: when a member asks it to, or when D sees
  # itself missing from `leave_after` authoritative answers in a row.

  @enforce_keys [:self]
  defstruct self: nil,
            prune: false,
            leave_after: Caravan.Cluster.Config.default(:leave_after),
            max_departed: Caravan.Cluster.Config.default(:max_nodes),
            # Nodes the last authoritative answer lists (plus nodes found
            # by non-authoritative answers since).
            listed: MapSet.new(),
            # node => poll number when DNS stopped listing it (nodes listed
            # before and missing from the last authoritative answer).
            departed: %{},
            # node => authoritative polls it stayed connected after it
            # was asked to leave.
            asked: %{},
            # Departed nodes seen gone after being asked: they can leave by
            # themselves, so they are asked again, never disconnected from
            # here (global may reconnect one for a moment while the others
            # sync).
            leavers: MapSet.new(),
            polls: 0,
            ever_listed?: false,
            # Authoritative answers in a row that do not list this node.
            missing: 0,
            # nil (a member), :missing (DNS dropped this node) or
            # {:asked, node} (a member asked it to leave).
            left: nil

  @type t :: %__MODULE__{}
  @type event ::
          {:departed, [node()]}
          | {:returned, [node()]}
          | {:self_missing, pos_integer()}
          | {:leave, :missing}
          | :back

  @doc """
  A new membership for this node `self`. Options: `:prune` (boolean),
  `:leave_after` (authoritative polls, positive), `:max_departed` (how
  many departed nodes it remembers, positive).
  """
  @spec new(node(), keyword()) :: t()
  def new(self, opts \\ []) do
    struct!(__MODULE__, [self: self] ++ Keyword.take(opts, [:prune, :leave_after, :max_departed]))
  end

  @doc """
  An authoritative answer (every query answered, nothing dropped): DNS
  lists exactly `nodes`. Returns `{membership, events}`: the nodes it no
  longer lists (`{:departed, nodes}`), departed nodes it lists again
  (`{:returned, nodes}`), `{:self_missing, n}` while this node, listed
  before, is missing (n answers in a row), `{:leave, :missing}` once at
  `leave_after`, `:back` when a node that left is listed again.
  """
  @spec authoritative(t(), [node()]) :: {t(), [event()]}
  def authoritative(%__MODULE__{} = m, nodes) do
    now = MapSet.new(nodes)
    polls = m.polls + 1
    gone = m.listed |> MapSet.difference(now) |> MapSet.delete(m.self)
    returned = for {node, _} <- m.departed, MapSet.member?(now, node), do: node

    departed =
      m.departed
      |> Map.drop(returned)
      |> Map.merge(Map.new(gone, &{&1, polls}))
      |> cap(m.max_departed)

    m = %{
      m
      | listed: now,
        departed: departed,
        polls: polls,
        asked: Map.drop(m.asked, nodes),
        leavers: MapSet.difference(m.leavers, now)
    }

    {m, self_events} = self_seen(m, MapSet.member?(now, m.self))

    events =
      [{:departed, Enum.sort(gone)}, {:returned, Enum.sort(returned)}]
      |> Enum.reject(&match?({_, []}, &1))

    {m, events ++ self_events}
  end

  @doc """
  A non-authoritative answer (a lookup failed, or more than max_nodes):
  `nodes` are listed, nothing else is concluded. Returns
  `{membership, events}` as `authoritative/2` (only `:returned` and
  `:back` can occur).
  """
  @spec partial(t(), [node()]) :: {t(), [event()]}
  def partial(%__MODULE__{} = m, nodes) do
    returned = for {node, _} <- m.departed, node in nodes, do: node

    m = %{
      m
      | listed: MapSet.union(m.listed, MapSet.new(nodes)),
        departed: Map.drop(m.departed, returned),
        asked: Map.drop(m.asked, nodes),
        leavers: MapSet.difference(m.leavers, MapSet.new(nodes))
    }

    {m, self_events} = if m.self in nodes, do: self_seen(m, true), else: {m, []}

    events = if returned == [], do: [], else: [{:returned, Enum.sort(returned)}]
    {m, events ++ self_events}
  end

  # This node listed (true) or missing (false) in an answer.
  defp self_seen(m, true) do
    back = if m.left, do: [:back], else: []
    {%{m | ever_listed?: true, missing: 0, left: nil}, back}
  end

  # Never listed yet (a node booting before its health check passes):
  # nothing to conclude.
  defp self_seen(%{ever_listed?: false} = m, false), do: {m, []}

  defp self_seen(m, false) do
    missing = m.missing + 1
    m = %{m | missing: missing}

    cond do
      m.left != nil -> {m, []}
      missing >= m.leave_after -> {%{m | left: :missing}, [{:leave, :missing}]}
      true -> {m, [{:self_missing, missing}]}
    end
  end

  @doc """
  A member (`from`) asked this node to leave. Returns `{membership,
  first?}`: `first?` is false when it had already left.
  """
  @spec asked_to_leave(t(), node()) :: {t(), boolean()}
  def asked_to_leave(%__MODULE__{left: nil} = m, from), do: {%{m | left: {:asked, from}}, true}
  def asked_to_leave(%__MODULE__{} = m, _from), do: {m, false}

  @doc "Whether this node dials the nodes DNS lists (false once it left)."
  @spec dial?(t()) :: boolean()
  def dial?(%__MODULE__{left: left}), do: left == nil

  @doc """
  Whether `node` is one this topology keeps out: `prune` is on and the
  last authoritative answer does not list it although an earlier one did.
  """
  @spec refuse?(t(), node()) :: boolean()
  def refuse?(%__MODULE__{prune: prune, departed: departed}, node),
    do: prune and is_map_key(departed, node)

  @doc """
  What to do, after an authoritative answer, about the departed nodes
  still `connected`: `{membership, ask, force}`. `ask` are asked to leave
  (again); `force` stayed connected for `leave_after` answers after being
  asked and never left when asked (a node that cannot leave by itself: no
  Caravan or OTP < 25.1 there): they are disconnected from here. A node
  that left when asked once is only ever asked. Empty unless `prune` is on.
  """
  @spec enforce(t(), [node()]) :: {t(), [node()], [node()]}
  def enforce(%__MODULE__{prune: false} = m, _connected), do: {%{m | asked: %{}}, [], []}

  def enforce(%__MODULE__{} = m, connected) do
    stay = for node <- connected, is_map_key(m.departed, node), do: node
    # Asked before and gone since: it can leave by itself.
    gone = for {node, _} <- m.asked, node not in stay, do: node
    leavers = MapSet.union(m.leavers, MapSet.new(gone))
    asked = Map.new(stay, &{&1, Map.get(m.asked, &1, -1) + 1})

    {force, ask} =
      Enum.split_with(stay, &(asked[&1] >= m.leave_after and not MapSet.member?(leavers, &1)))

    asked = Map.drop(asked, force)
    {%{m | asked: asked, leavers: leavers}, Enum.sort(ask), Enum.sort(force)}
  end

  @doc """
  Of the connects in flight (or queued) to `nodes`, those to cancel after
  an authoritative answer: the nodes it does not list, or all of them once
  this node has left.
  """
  @spec cancel(t(), [node()]) :: [node()]
  def cancel(%__MODULE__{left: nil, listed: listed}, nodes),
    do: Enum.reject(nodes, &MapSet.member?(listed, &1))

  def cancel(%__MODULE__{}, nodes), do: nodes

  # Keeps the `max` most recently departed nodes.
  defp cap(departed, max) when map_size(departed) <= max, do: departed

  defp cap(departed, max) do
    departed |> Enum.sort_by(&elem(&1, 1), :desc) |> Enum.take(max) |> Map.new()
  end
end
