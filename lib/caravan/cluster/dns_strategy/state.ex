defmodule Caravan.Cluster.DnsStrategy.State do
  @moduledoc false
  # The state of one running `Caravan.Cluster.DnsStrategy`: its config and
  # what it keeps between polls. Caravan.Cluster.Act changes it after a poll
  # or a connect; the strategy itself only starts polls.

  alias Caravan.Cluster.{Config, Connector, Membership, Warnings}

  @enforce_keys [:config, :membership, :warnings, :connector]
  defstruct [
    :config,
    :membership,
    :warnings,
    :connector,
    poll: nil,
    repoll: false,
    last_poll: nil
  ]

  @typedoc """
  The last poll's outcome, for `Caravan.diagnose/1`: `:at` is
  `System.monotonic_time/0` when the strategy acted on it; `:trimmed` is
  `{k, n}` while answers hold k of the n nodes seen
  (`Caravan.Cluster.Membership.trimmed/1`), else nil.
  """
  @type last_poll :: %{
          at: integer(),
          found: [node()],
          answered: [String.t()],
          errors: [{String.t(), term()}],
          invalid: [String.t()],
          trimmed: {non_neg_integer(), non_neg_integer()} | nil
        }

  @typedoc """
  `:poll` is `{tag, monitor}` of the poll process running, or nil;
  `:repoll` is true when a poll was asked for while one ran (it starts when
  that one ends).
  """
  @type t :: %__MODULE__{
          config: Config.t(),
          poll: {reference(), reference()} | nil,
          repoll: boolean(),
          membership: Membership.t(),
          warnings: Warnings.t(),
          connector: Connector.t(),
          last_poll: last_poll() | nil
        }

  @doc "The state of a strategy started with `config`, before its first poll."
  @spec new(Config.t()) :: t()
  def new(%Config{} = config) do
    %__MODULE__{
      config: config,
      membership:
        Membership.new(node(),
          prune: config.prune,
          leave_after: config.leave_after,
          max_departed: config.max_nodes,
          poll_interval: config.poll_interval
        ),
      warnings: Warnings.new(),
      connector: Connector.new(config)
    }
  end
end
