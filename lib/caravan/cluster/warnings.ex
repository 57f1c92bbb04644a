defmodule Caravan.Cluster.Warnings do
  @moduledoc false
  # One job: what the strategy says to the operator, and when. It owns the
  # warn-once ledgers (a streak's first warning is a warning, repeats are
  # debug, its end an info; silent DNS after @silence_polls polls; an
  # unreachable node once per report_interval) as pure data kept in the
  # strategy's state, every operator-facing text, and the log line itself
  # (log/3). Callers decide what happened; this module decides what it is
  # worth saying.

  require Logger

  alias Caravan.Cluster.{Config, Libcluster}
  alias Caravan.Epmd.Probe

  # Polls before a silent DNS is reported: a node that starts before its
  # peers register is not warned of at once.
  @silence_polls 3

  defstruct keys: MapSet.new(),
            silence: {nil, 0},
            unreachable: %{},
            report_interval: Config.default(:report_interval)

  @type key :: term()
  @type level :: :warning | :info | :debug | nil
  @type silence :: :no_instances | :only_self
  @opaque t :: %__MODULE__{
            keys: MapSet.t(key()),
            silence: {silence() | nil, non_neg_integer()},
            unreachable: %{node() => integer()},
            report_interval: pos_integer()
          }

  @doc "No warnings outstanding; `report_interval` ms between reports of one unreachable node."
  @spec new(pos_integer()) :: t()
  def new(report_interval \\ Config.default(:report_interval)),
    do: %__MODULE__{report_interval: report_interval}

  @doc """
  Logs `message` at `level` (nil: nothing) as `[caravan] topology <t>: ...`.
  Under libcluster, debug lines follow `config :libcluster, debug: true`,
  as libcluster's own strategies do.
  """
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
  What a poll's result (`t:Caravan.Cluster.Poll.t/0`) deserves in the log:
  `{warnings, [{level, message}]}`. A lookup that works again is an info,
  a failed one a warning once per streak; skipped records and a capped
  answer are warned of once while they last; the nodes found are a debug
  entry. Nodes DNS no longer lists are forgotten (connect warnings and
  unreachable reports), so the ledgers stay as small as the answer.
  """
  @spec poll(t(), map(), %{poll_interval: pos_integer(), max_nodes: pos_integer()}) ::
          {t(), [{level(), String.t()}]}
  def poll(%__MODULE__{} = w, result, config) do
    found = MapSet.new(result.found)

    recovered =
      for query <- result.answered,
          do: {&recover/2, {:lookup, query}, "lookup of #{inspect(query)} works again"}

    failed =
      for {query, reason} <- result.errors,
          do:
            {&warn/2, {:lookup, query},
             "lookup of #{inspect(query)} failed (#{format_reason(reason)}); " <>
               "keeping the cluster as it is, retrying about every #{config.poll_interval} ms"}

    {entries, w} =
      Enum.map_reduce(recovered ++ failed, w, fn {fun, key, message}, w ->
        {level, w} = fun.(w, key)
        {{level, message}, w}
      end)

    listed =
      if result.answered != [],
        do: [{:debug, "DNS lists #{length(result.found)} node(s): #{inspect(result.found)}"}],
        else: []

    w = clear_if(w, fn key -> match?({:connect, _}, key) and elem(key, 1) not in found end)
    w = %{w | unreachable: Map.filter(w.unreachable, fn {node, _} -> node in found end)}

    {w, invalid} =
      while(w, result.invalid != [], :invalid_records, fn ->
        "skipped SRV records: #{Enum.join(result.invalid, "; ")}"
      end)

    {w, capped} =
      while(w, result.dropped > 0, :max_nodes, fn ->
        "DNS lists #{length(result.found) + result.dropped} nodes, more than max_nodes " <>
          "(#{config.max_nodes}); ignored #{result.dropped} of them and pruned none"
      end)

    {w, Enum.reject(entries ++ listed ++ invalid ++ capped, &match?({nil, _}, &1))}
  end

  @doc "Polls of silent DNS before it is reported."
  @spec silence_polls() :: pos_integer()
  def silence_polls, do: @silence_polls

  @doc """
  Silence is not health: adds one poll, `found` (the nodes an authoritative
  answer listed) or `:unknown` (a lookup failed: the streak is kept).
  Returns `{event, warnings}`: `{:start, kind}` when DNS has listed no
  instances (`:no_instances`) or only `self` (`:only_self`) for
  #{@silence_polls} polls, `{:end, kind}` when a reported streak ends, else nil.
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
  A connect to `node` failed at `now` (monotonic ms): `{true, warnings}`
  when it is to be explained (first failure of a streak, or
  `report_interval` ms since the last report), else `{false, warnings}`.
  """
  @spec connect_failed(t(), node(), integer()) :: {boolean(), t()}
  def connect_failed(%__MODULE__{unreachable: last} = w, node, now) do
    case last do
      %{^node => at} when now - at < w.report_interval -> {false, w}
      _ -> {true, %{w | unreachable: Map.put(last, node, now)}}
    end
  end

  @doc "`node` connected: its unreachable streak ends."
  @spec connected(t(), node()) :: t()
  def connected(%__MODULE__{} = w, node), do: %{w | unreachable: Map.delete(w.unreachable, node)}

  @doc """
  The texts, `{level, message}` (level nil: nothing to say), of what the
  strategy meets: a membership event (`t:Caravan.Cluster.Membership.event/0`),
  a silent DNS starting or ending, a failed connect explained, setup
  mistakes at start.
  """
  @spec text(term(), Config.t()) :: {level(), String.t()}
  def text({:departed, nodes}, %Config{prune: true}),
    do:
      {:info,
       "DNS no longer lists #{Enum.join(nodes, ", ")}; " <>
         "keeping it out (prune: true) until DNS lists it again"}

  def text({:departed, _nodes}, _config), do: {nil, ""}
  def text({:returned, nodes}, _config), do: {:debug, "DNS lists #{Enum.join(nodes, ", ")} again"}

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
       "answers in a row; #{action} until DNS lists it again (a failed health check or " <>
       "readiness probe?)"}
  end

  def text(:back, _config), do: {:info, "DNS lists this node again; connecting again"}

  def text({:asked_to_leave, from}, _config),
    do:
      {:warning,
       "#{from} asked this node to leave: DNS no longer lists #{node()} there " <>
         "(prune: true). Leaving the cluster; no more connects until DNS lists " <>
         "this node again"}

  def text({:silence, {:end, _kind}, found}, _config),
    do: {:info, "DNS lists #{length(found)} node(s) again"}

  def text({:silence, {:start, kind}, _found}, config) do
    nameservers =
      if config.nameservers == [],
        do: "the system's resolv.conf",
        else: Enum.map_join(config.nameservers, ", ", &Caravan.DNS.Options.text/1)

    asked = "#{Enum.map_join(config.queries, ", ", &inspect/1)} (nameservers: #{nameservers})"

    {:warning,
     case kind do
       :no_instances ->
         "DNS has listed no instances for #{@silence_polls} polls: #{asked} answers " <>
           "NXDOMAIN/NODATA or no records; this node runs alone. Check the query " <>
           "(e.g. _app._tcp.service.consul) and that the service is registered and healthy " <>
           "(Caravan.diagnose() tells more)"

       :only_self ->
         "DNS has listed only this node (#{node()}) for #{@silence_polls} polls: #{asked}; " <>
           "the other instances are not registered or not healthy in DNS"
     end}
  end

  def text({:unreachable, node, why}, config),
    do:
      {:warning,
       "cannot connect to #{node}: #{why} (reported again every " <>
         "#{div(config.report_interval, 1000)} s while DNS lists it and it stays unreachable)"}

  @doc """
  Why a connect to `node` failed (`failure`, what the connect returned),
  with what a probe of its host and port finds (`Caravan.Epmd.Probe.why/1`,
  which takes up to a second or two: call it outside the strategy).
  """
  @spec why(node(), term()) :: String.t()
  def why(node, failure) do
    start =
      case failure do
        false -> ""
        :timeout -> "no answer within connect_timeout; "
        other -> "#{inspect(other)}; "
      end

    start <> Probe.why(node)
  end

  @doc """
  Once, when a topology starts: a node without -name/-sname cannot connect
  to anything it finds, and peers dial `"<node_sname>-<port>@<host>"`,
  which must be this node's name. Logs each problem found; `:ok`.
  """
  @spec at_start(Config.t()) :: :ok
  def at_start(config) do
    unless Node.alive?() do
      log(
        :warning,
        config,
        "this node is not distributed (started without -name or -sname), so it will look " <>
          "up peers but cannot connect to them; start it with -name <name>@<host> (or " <>
          "-sname) and Caravan's epmd module"
      )
    end

    case Probe.name_mismatch(node(), config.node_sname) do
      nil -> :ok
      problem -> log(:warning, config, problem)
    end
  end

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
