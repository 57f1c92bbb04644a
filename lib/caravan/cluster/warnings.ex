defmodule Caravan.Cluster.Warnings do
  @moduledoc false
  # Warn-once bookkeeping for the strategy's logs, as a pure data structure:
  # the first warning of a streak is a warning, repeats are debug, and the
  # end of a streak is an info ("works again"). Functions return the log
  # level to use (nil: log nothing); the caller formats and logs.

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
end
