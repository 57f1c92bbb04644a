defmodule Caravan.Cluster.Membership do
  @moduledoc false
  # The membership decisions of one topology, as pure functions over a
  # struct: what DNS lists, which nodes it no longer lists (departed), and
  # whether this node itself has been dropped. Caravan.Cluster.Act feeds it
  # each poll's answer and carries out what it decides: asking a departed
  # node to leave (why not disconnect it: Caravan.Cluster.Leave),
  # cancelling connects, leaving, not dialing.
  #
  # Answers trimmed without a sign (a forwarder in front of Consul; rule and
  # cost: guides/consul-nomad-kubernetes.md): an answer that drops and adds
  # nodes makes answers suspect for `decay` polls; what they list adds up, a
  # node departs after `leave_after` of them lacked it in a row, or, once
  # one they lacked came back (a trim), misses_needed/2 distinct ones.

  @enforce_keys [:self]
  defstruct self: nil,
            prune: false,
            leave_after: Caravan.Cluster.Config.default(:leave_after),
            max_departed: Caravan.Cluster.Config.default(:max_nodes),
            # The last authoritative answer's nodes, plus those of
            # non-authoritative and suspect ones since.
            listed: MapSet.new(),
            # node => poll when DNS stopped listing it.
            departed: %{},
            # node => authoritative polls it stayed connected once asked
            # to leave; departed nodes that left when asked (only asked).
            asked: %{},
            leavers: MapSet.new(),
            polls: 0,
            ever_listed?: false,
            # Authoritative answers in a row that do not list this node.
            missing: 0,
            # nil, :missing (DNS dropped this node) or {:asked, node}.
            left: nil,
            # The last authoritative answer; node => suspect answers in a
            # row that lacked it; polls of the last swap and of the last
            # return of a node such answers lacked (long ago: -2^20).
            answer: nil,
            misses: %{},
            swapped: -1_048_576,
            echo: -1_048_576,
            decay: 5

  @type t :: %__MODULE__{}
  @type event ::
          {:departed | :returned, [node()]}
          | {:self_missing, pos_integer()}
          | {:leave, :missing}
          | :back

  # A live node misses misses_needed/2 trimmed answers with at most this
  # probability; a suspicion lasts @decay_ms, at least @decay_polls polls.
  @doubt 1.0e-6
  @decay_ms 30_000
  @decay_polls 5

  @doc """
  A new membership for this node `self`. Options: `:prune` (boolean),
  `:leave_after` (authoritative polls), `:max_departed` (departed nodes
  remembered), `:poll_interval` (ms; sets how many polls a suspicion lasts).
  """
  @spec new(node(), keyword()) :: t()
  def new(self, opts \\ []) do
    decay = max(@decay_polls, ceil(@decay_ms / Keyword.get(opts, :poll_interval, @decay_ms)))
    fields = Keyword.take(opts, [:prune, :leave_after, :max_departed])
    struct!(__MODULE__, [self: self, decay: decay] ++ fields)
  end

  @doc """
  Distinct trimmed answers in a row that must lack a node before it
  departs, when they hold `k` (positive) of the `n` nodes seen: the least
  `m` with `(1 - k/n)^m <= #{@doubt}` (43 for 11 of 40); 1 when `k >= n`.
  """
  @spec misses_needed(pos_integer(), non_neg_integer()) :: pos_integer()
  def misses_needed(k, n) when k >= n, do: 1
  def misses_needed(k, n), do: ceil(:math.log(@doubt) / :math.log(1 - k / n))

  @doc """
  `{k, n}` (the last answer's nodes, the nodes seen) while answers look
  trimmed and one they lacked came back lately (a replaced one never does).
  """
  @spec trimmed(t()) :: {non_neg_integer(), non_neg_integer()} | nil
  def trimmed(m), do: if(trimming?(m), do: {MapSet.size(m.answer), MapSet.size(m.listed)})

  @doc "The nodes to dial: `new`, and while `trimmed/1` every node listed not `connected`."
  @spec to_dial(t(), [node()], [node()]) :: [node()]
  def to_dial(m, new, connected) do
    if trimmed(m), do: Enum.uniq(new ++ Enum.to_list(m.listed)) -- [m.self | connected], else: new
  end

  defp suspect?(%__MODULE__{swapped: swapped, decay: decay, polls: polls}),
    do: polls - swapped < decay

  defp trimming?(%__MODULE__{echo: echo} = m), do: suspect?(m) and m.polls - echo < m.decay

  @doc """
  An authoritative answer (every query answered, nothing dropped) lists
  `nodes`. `{membership, events}`: nodes no longer listed (`{:departed,
  nodes}`), departed nodes listed again (`{:returned, nodes}`),
  `{:self_missing, n}` while this node, listed before, is missing (n
  answers in a row), `{:leave, :missing}` once at `leave_after`, `:back`
  when a node that left is listed again.
  """
  @spec authoritative(t(), [node()]) :: {t(), [event()]}
  def authoritative(%__MODULE__{answer: before} = m, nodes) do
    now = MapSet.new(nodes)
    polls = m.polls + 1

    swap? = before != nil and not MapSet.subset?(before, now) and not MapSet.subset?(now, before)
    echo? = Enum.any?(m.misses, fn {node, n} -> n > 0 and MapSet.member?(now, node) end)
    m = %{m | answer: now, polls: polls, swapped: if(swap?, do: polls, else: m.swapped)}
    m = %{m | echo: if(echo?, do: polls, else: m.echo)}

    # An empty answer tells nothing, nor a repeated one (a cache) once trimming shows.
    cond do
      not suspect?(m) -> judge(%{m | misses: %{}}, now, nil)
      nodes == [] or (now == before and trimming?(m)) -> judge(m, now, 0)
      true -> judge(m, now, 1)
    end
  end

  # `count` nil: a whole answer, what it lacks departs; else what it lacks
  # misses `count` (0: nothing is concluded) more answers.
  defp judge(%{polls: polls} = m, now, count) do
    {gone, listed, misses, need} = lacking(m, now, count)
    returned = for {node, _} <- m.departed, MapSet.member?(now, node), do: node

    departed = m.departed |> Map.drop(returned) |> Map.merge(Map.new(gone, &{&1, polls}))

    m = %{
      m
      | listed: listed,
        misses: misses,
        departed: cap(departed, m.max_departed),
        asked: Map.drop(m.asked, MapSet.to_list(now)),
        leavers: MapSet.difference(m.leavers, now)
    }

    {m, self_events} =
      cond do
        MapSet.member?(now, m.self) -> self_seen(m, true)
        count == 0 -> {m, []}
        true -> self_seen(m, false, max(m.leave_after, need))
      end

    events =
      [{:departed, Enum.sort(gone)}, {:returned, Enum.sort(returned)}]
      |> Enum.reject(&match?({_, []}, &1))

    {m, events ++ self_events}
  end

  # {gone, listed, misses, need}: departed now, still listed, the misses of
  # those the answer lacks, the misses that depart.
  defp lacking(m, now, nil),
    do: {m.listed |> MapSet.difference(now) |> MapSet.delete(m.self), now, %{}, 1}

  defp lacking(m, now, count) do
    tracked = MapSet.union(m.listed, now)
    # Until a node they lacked came back, suspect answers may be a deploy.
    need = if trimming?(m), do: misses_needed(max(MapSet.size(now), 1), MapSet.size(tracked))
    need = need || m.leave_after

    misses =
      for n <- MapSet.difference(tracked, now), n != m.self, do: {n, (m.misses[n] || 0) + count}

    {gone, misses} = Enum.split_with(misses, fn {_, n} -> count > 0 and n >= need end)
    gone = Enum.map(gone, &elem(&1, 0))
    {gone, MapSet.difference(tracked, MapSet.new(gone)), Map.new(misses), need}
  end

  @doc """
  A non-authoritative answer (a lookup failed, or more than max_nodes):
  `nodes` are listed, nothing else is concluded. Returns
  `{membership, events}` as `authoritative/2` (only `:returned` and
  `:back` can occur).
  """
  @spec partial(t(), [node()]) :: {t(), [event()]}
  def partial(%__MODULE__{} = m, nodes), do: judge(m, MapSet.new(nodes), 0)

  # This node listed (true) or missing (false, `need` in a row to leave).
  defp self_seen(m, true) do
    back = if m.left, do: [:back], else: []
    {%{m | ever_listed?: true, missing: 0, left: nil}, back}
  end

  # Never listed yet (booting before its health check passes): nothing.
  defp self_seen(%{ever_listed?: false} = m, false, _need), do: {m, []}

  defp self_seen(m, false, need) do
    missing = m.missing + 1
    m = %{m | missing: missing}

    cond do
      m.left != nil -> {m, []}
      missing >= need -> {%{m | left: :missing}, [{:leave, :missing}]}
      true -> {m, [{:self_missing, missing}]}
    end
  end

  @doc "A member (`from`) asked this node to leave: `{membership, first?}` (false: it had left)."
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
  (again); `force` stayed connected `leave_after` answers after being asked
  and never left when asked (no Caravan or OTP < 25.1 there): disconnected
  from here. Empty unless `prune` is on.
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
  an authoritative answer: to nodes not listed, or all once this node left.
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
