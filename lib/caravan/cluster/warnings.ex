defmodule Caravan.Cluster.Warnings do
  @moduledoc false
  # Warn-once bookkeeping for the strategy's logs, as a pure data structure:
  # the first warning of a streak is a warning, repeats are debug, and the
  # end of a streak is an info ("works again"). Functions return the log
  # level to use (nil: log nothing); the caller formats and logs. poll/3
  # turns a poll's result into the log entries it deserves.

  defstruct keys: MapSet.new()

  @type key :: term()
  @type level :: :warning | :info | :debug | nil
  @opaque t :: %__MODULE__{keys: MapSet.t(key())}

  @doc "No warnings outstanding."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc "A warning about `key`: `:warning` the first time, `:debug` while it stays."
  @spec warn(t(), key()) :: {level(), t()}
  def warn(%__MODULE__{keys: keys} = warnings, key) do
    if MapSet.member?(keys, key),
      do: {:debug, warnings},
      else: {:warning, %{warnings | keys: MapSet.put(keys, key)}}
  end

  @doc "`key`'s trouble is over: `:info` if it was warned of (and forgets it), else nil."
  @spec recover(t(), key()) :: {level(), t()}
  def recover(%__MODULE__{keys: keys} = warnings, key) do
    if MapSet.member?(keys, key),
      do: {:info, %{warnings | keys: MapSet.delete(keys, key)}},
      else: {nil, warnings}
  end

  @doc "Forgets `key` without logging (the next warning about it is a warning again)."
  @spec clear(t(), key()) :: t()
  def clear(%__MODULE__{keys: keys} = warnings, key),
    do: %{warnings | keys: MapSet.delete(keys, key)}

  @doc "Forgets every key for which `fun` returns true."
  @spec clear_if(t(), (key() -> boolean())) :: t()
  def clear_if(%__MODULE__{keys: keys} = warnings, fun),
    do: %{warnings | keys: MapSet.reject(keys, fun)}

  @doc "Whether `key` is warned of."
  @spec warned?(t(), key()) :: boolean()
  def warned?(%__MODULE__{keys: keys}, key), do: MapSet.member?(keys, key)

  @doc """
  What a poll's result (`Caravan.Cluster.Poll`) deserves in the log:
  `{warnings, [{level, message}]}`. A lookup that works again is an info,
  a failed one a warning once per streak; skipped records and a capped
  answer are warned of once while they last; the nodes found are a debug
  entry. Connect warnings about nodes DNS no longer lists are forgotten,
  so the ledger stays as small as the answer.
  """
  @spec poll(t(), map(), %{poll_interval: pos_integer(), max_nodes: pos_integer()}) ::
          {t(), [{level(), String.t()}]}
  def poll(%__MODULE__{} = warnings, result, config) do
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

    {entries, warnings} =
      Enum.map_reduce(recovered ++ failed, warnings, fn {fun, key, message}, warnings ->
        {level, warnings} = fun.(warnings, key)
        {{level, message}, warnings}
      end)

    listed =
      if result.answered != [],
        do: [{:debug, "DNS lists #{length(result.found)} node(s): #{inspect(result.found)}"}],
        else: []

    warnings =
      clear_if(warnings, fn
        {:connect, node} -> not MapSet.member?(found, node)
        _other -> false
      end)

    {warnings, invalid} =
      while(warnings, result.invalid != [], :invalid_records, fn ->
        "skipped SRV records: #{Enum.join(result.invalid, "; ")}"
      end)

    {warnings, capped} =
      while(warnings, result.dropped > 0, :max_nodes, fn ->
        "DNS lists #{length(result.found) + result.dropped} nodes, more than max_nodes " <>
          "(#{config.max_nodes}); ignored #{result.dropped} of them and pruned none"
      end)

    {warnings, Enum.reject(entries ++ listed ++ invalid ++ capped, &match?({nil, _}, &1))}
  end

  # A warning while `condition` holds; forgotten once it stops.
  defp while(warnings, true, key, message) do
    {level, warnings} = warn(warnings, key)
    {warnings, [{level, message.()}]}
  end

  defp while(warnings, false, key, _message), do: {clear(warnings, key), []}

  defp format_reason({kind, message}) when is_atom(kind) and is_binary(message),
    do: "#{kind}: #{message}"

  defp format_reason(reason), do: inspect(reason)
end
