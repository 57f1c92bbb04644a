defmodule Caravan.Cluster.Warnings do
  @moduledoc false
  # One job: what the strategy tells the operator, and when: the warn-once
  # ledgers (a streak warns once, repeats are debug, its end is an info;
  # silent DNS; the node list said when it changes) as pure data in the
  # strategy's state, the texts, and the log line (log/3). A failed
  # connect's streak is Caravan.Cluster.Connector's.

  require Logger

  alias Caravan.Cluster.{Config, Libcluster, Poll}
  alias Caravan.Epmd.Probe

  # Polls before a silent DNS is reported: a node that starts before its
  # peers register is not warned of at once.
  @silence_polls 3
  @until "until DNS lists it again"
  @trimmed "another subset each time: a DNS forwarder trims them without saying so; all " <>
             "are dialed, none pruned on them. Fix: nameservers: [\"127.0.0.1:8600\"] (the " <>
             "agent), or the forwarder asking it over TCP (unbound: stub-tcp-upstream: yes; " <>
             "BIND: server <agent> { tcp-only yes; }; guides/consul-nomad-kubernetes.md). Asked: "
  @not_distributed "this node is not distributed (started without -name or -sname), so it " <>
                     "will look up peers but cannot connect to them; start it with -name " <>
                     "<name>@<host> (or -sname) and Caravan's epmd module"

  defstruct keys: MapSet.new(), silence: {nil, 0}, listed: nil

  @type key :: term()
  @type level :: Logger.level() | nil
  @type silence :: :no_instances | :only_self
  @opaque t :: %__MODULE__{
            keys: MapSet.t(key()),
            silence: {silence() | nil, non_neg_integer()},
            listed: [node()] | nil
          }

  @doc "No warnings outstanding."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc "Logs `message` at `level` (nil: not); libcluster's `debug:` gates debug lines under it."
  @spec log(level(), Config.t(), String.t()) :: :ok
  def log(nil, _config, _message), do: :ok

  def log(:debug, %Config{libcluster: true} = config, message) do
    if Libcluster.debug?(), do: Logger.debug("[caravan] topology #{config.topology}: #{message}")
    :ok
  end

  def log(level, config, message),
    do: Logger.log(level, "[caravan] topology #{config.topology}: #{message}")

  @doc "A warning about `key`: `:warning` the first time, `:debug` while it stays."
  @spec warn(t(), key()) :: {level(), t()}
  def warn(%__MODULE__{keys: keys} = w, key) do
    if MapSet.member?(keys, key),
      do: {:debug, w},
      else: {:warning, %{w | keys: MapSet.put(keys, key)}}
  end

  @doc "`key`'s trouble is over: `:info` if it was warned of (and forgets it), else nil."
  @spec recover(t(), key()) :: {level(), t()}
  def recover(%__MODULE__{keys: keys} = w, key) do
    if MapSet.member?(keys, key),
      do: {:info, %{w | keys: MapSet.delete(keys, key)}},
      else: {nil, w}
  end

  @doc "Forgets `key` without logging (the next warning about it is a warning again)."
  @spec clear(t(), key()) :: t()
  def clear(%__MODULE__{keys: keys} = w, key), do: %{w | keys: MapSet.delete(keys, key)}

  @doc "Forgets every key for which `fun` returns true."
  @spec clear_if(t(), (key() -> boolean())) :: t()
  def clear_if(%__MODULE__{keys: keys} = w, fun), do: %{w | keys: MapSet.reject(keys, fun)}

  @doc "Whether `key` is warned of."
  @spec warned?(t(), key()) :: boolean()
  def warned?(%__MODULE__{keys: keys}, key), do: MapSet.member?(keys, key)

  @doc """
  What a poll's result (`t:Caravan.Cluster.Poll.t/0`) deserves in the log,
  `{warnings, [{level, message}]}`: failed lookups, their recovery, the
  nodes listed (when they change), skipped records, a capped answer, a
  record for this node's host and name with another port. Nodes DNS no
  longer lists are forgotten, so the ledgers stay as small as the answer.
  """
  @spec poll(t(), Poll.t(), Config.t()) :: {t(), [{level(), String.t()}]}
  def poll(%__MODULE__{} = w, result, config) do
    found = MapSet.new(result.found)

    {entries, w} =
      Enum.map_reduce(result.answered ++ result.errors, w, fn
        {query, reason}, w ->
          {level, w} = warn(w, {:lookup, query})

          {{level,
            "lookup of #{inspect(query)} failed (#{format_reason(reason)}); keeping the " <>
              "cluster as it is, retrying about every #{config.poll_interval} ms"}, w}

        query, w ->
          {level, w} = recover(w, {:lookup, query})
          {{level, "lookup of #{inspect(query)} works again"}, w}
      end)

    sorted = if result.answered != [], do: Enum.sort(result.found), else: w.listed

    listed =
      if sorted != w.listed,
        do: [{:debug, "DNS lists #{length(sorted)} node(s): #{inspect(result.found)}"}],
        else: []

    w = clear_if(%{w | listed: sorted}, &(match?({:connect, _}, &1) and elem(&1, 1) not in found))

    {w, invalid} =
      while(w, result.invalid != [], :invalid_records, fn ->
        "skipped SRV records: #{Enum.join(result.invalid, "; ")}"
      end)

    {w, capped} =
      while(w, result.dropped > 0, :max_nodes, fn ->
        "DNS lists #{length(result.found) + result.dropped} nodes, more than max_nodes " <>
          "(#{config.max_nodes}); ignored #{result.dropped} of them and pruned none"
      end)

    other_port = result[:authoritative?] && Caravan.Epmd.NodeName.other_port(node(), result.found)
    {w, port} = while(w, is_binary(other_port), :other_port, fn -> other_port end)

    {w, Enum.reject(entries ++ listed ++ invalid ++ capped ++ port, &match?({nil, _}, &1))}
  end

  @doc """
  Silence is not health: adds a poll's `found` (`:unknown` when a lookup
  failed). `{event, warnings}`: `{:start, kind}` when DNS has listed no
  instances or only `self` for #{@silence_polls} polls, `{:end, kind}` when
  a reported streak ends, else nil.
  """
  @spec silence(t(), [node()] | :unknown, node()) :: {{:start | :end, silence()} | nil, t()}
  def silence(w, :unknown, _self), do: {nil, w}

  def silence(%__MODULE__{silence: {was, count}} = w, found, self) do
    kind =
      case found do
        [] -> :no_instances
        [^self] -> :only_self
        _ -> nil
      end

    count = if kind == was, do: count + 1, else: 1
    ended = if kind != was and elem(w.silence, 1) >= @silence_polls, do: {:end, was}
    started = if kind != nil and count == @silence_polls, do: {:start, kind}
    {ended || started, %{w | silence: if(kind, do: {kind, count}, else: {nil, 0})}}
  end

  @doc """
  `{level, message}` (nil: nothing to say) for what the strategy meets: a
  `t:Caravan.Cluster.Membership.event/0`, silent DNS, an unreachable node,
  trimmed answers (`{:trimmed, {k, n}}`).
  """
  @spec text(term(), Config.t()) :: {level(), String.t()}
  def text({:trimmed, {k, n}}, config),
    do: {:warning, "answers hold #{k} of at least #{n} instances, #{@trimmed}#{asked(config)}"}

  def text({:departed, _nodes}, %Config{prune: false}), do: {nil, ""}

  def text({:departed, nodes}, _config),
    do: {:info, "DNS no longer lists #{list(nodes)}; keeping it out (prune: true) #{@until}"}

  def text({:returned, nodes}, _config), do: {:debug, "DNS lists #{list(nodes)} again"}

  def text({:self_missing, n}, config),
    do:
      {:debug,
       "DNS does not list this node (#{n} of #{config.leave_after} authoritative answers)"}

  def text({:leave, :missing}, config) do
    action =
      if config.prune,
        do: "left the cluster (prune: true) and stopped connecting",
        else: "stopped connecting (prune: false: existing connections stay)"

    {:warning,
     "DNS has not listed this node (#{node()}) in #{config.leave_after} authoritative " <>
       "answers in a row; #{action} #{@until} (a failed health check or readiness probe?)"}
  end

  def text(:back, _config), do: {:info, "DNS lists this node again; connecting again"}

  def text({:asked_to_leave, from}, _config),
    do:
      {:warning,
       "#{from} asked this node to leave: DNS no longer lists #{node()} there " <>
         "(prune: true). Leaving the cluster; no more connects until DNS lists this node again"}

  def text({:silence, {:end, _kind}, found, _connected}, _config),
    do: {:info, "DNS lists #{length(found)} node(s) again"}

  def text({:silence, {:start, :no_instances}, _found, connected}, config),
    do:
      {:warning,
       "DNS has listed no instances for #{@silence_polls} polls: #{asked(config)} answers " <>
         "NXDOMAIN/NODATA or no records; #{alone(connected)}. Check the query " <>
         "(e.g. _app._tcp.service.consul) and that the service is registered and healthy " <>
         "(Caravan.diagnose() tells more)"}

  def text({:silence, {:start, :only_self}, _found, _connected}, config),
    do:
      {:warning,
       "DNS has listed only this node (#{node()}) for #{@silence_polls} polls: " <>
         "#{asked(config)}; the other instances are not registered or not healthy in DNS"}

  def text({:unreachable, node, why}, config),
    do:
      {:warning,
       "cannot connect to #{node}: #{why} (reported again every " <>
         "#{div(config.report_interval, 1000)} s while DNS lists it and it stays unreachable)"}

  @doc "Logs at start what stops clustering: no -name/-sname, a name peers won't dial; `:ok`."
  @spec at_start(Config.t()) :: :ok
  def at_start(config) do
    if not Node.alive?(), do: log(:warning, config, @not_distributed)
    problem = Probe.name_mismatch(node(), config.node_sname, config.node_port)
    if problem, do: log(:warning, config, problem), else: :ok
  end

  defp list(nodes), do: Enum.join(nodes, ", ")

  defp alone([]), do: "this node runs alone"

  defp alone(connected),
    do: "this node keeps its #{length(connected)} connection(s) but finds no new peers"

  # The queries and the nameservers asked.
  defp asked(config),
    do:
      "#{Enum.map_join(config.queries, ", ", &inspect/1)} (nameservers: " <>
        "#{Caravan.DNS.asked_text(config.nameservers)})"

  # A warning while `condition` holds; forgotten once it stops.
  defp while(w, true, key, message) do
    {level, w} = warn(w, key)
    {w, [{level, message.()}]}
  end

  defp while(w, false, key, _message), do: {clear(w, key), []}

  defp format_reason({kind, message}) when is_atom(kind) and is_binary(message),
    do: "#{kind}: #{message}"

  defp format_reason(reason), do: inspect(reason)
end
