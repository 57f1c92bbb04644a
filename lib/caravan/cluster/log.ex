defmodule Caravan.Cluster.Log do
  @moduledoc false
  # One job: the strategy's log lines, `[caravan] topology <t>: <message>`.
  # Under libcluster, debug lines follow `config :libcluster, debug: true`,
  # as libcluster's own strategies do.

  require Logger

  alias Caravan.Cluster.{Config, Libcluster}

  # Logs `message` at `level` (nil: nothing) for `config`'s topology.
  @spec log(Logger.level() | nil, Config.t(), String.t()) :: :ok
  def log(nil, _config, _message), do: :ok

  def log(:debug, %Config{libcluster: true} = config, message) do
    if Libcluster.debug?(),
      do: Logger.debug("[caravan] topology #{config.topology}: #{message}")

    :ok
  end

  def log(level, config, message),
    do: Logger.log(level, "[caravan] topology #{config.topology}: #{message}")
end
