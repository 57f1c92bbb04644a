defmodule Caravan.Cluster.Config do
  @moduledoc false
  # One job: the validated configuration of one `Caravan.Cluster.DnsStrategy`
  # topology, its defaults (written here only; the strategy's moduledoc
  # renders them through default/1), and the order in which its keys are
  # checked (the checks are Config.Values').
  #
  # Built from libcluster's `%Cluster.Strategy.State{}` (its `:config` keyword
  # list holds the keys below) or from a keyword list when the strategy is
  # started without libcluster. See `Caravan.Cluster.DnsStrategy` for the keys.
  # `:query` is kept as `:queries`, a list, so one topology may follow several
  # services. Nameservers are kept parsed, `{ip_tuple, port}`, the form the
  # lookups take, so a poll parses no text (Caravan.DNS.Options.text/1 shows
  # one to a human).

  import Caravan.Cluster.Config.Values

  alias Caravan.DNS.Options

  @default_poll_interval 5_000
  @default_timeout Options.default_timeout()
  @default_connect_timeout 10_000
  @default_connect_concurrency 16
  @default_max_nodes 1024
  @default_leave_after 3
  @default_report_interval 300_000

  defstruct topology: :caravan,
            connect: {:net_kernel, :connect_node, []},
            disconnect: {:erlang, :disconnect_node, []},
            list_nodes: {:erlang, :nodes, [:connected]},
            queries: [],
            node_sname: nil,
            node_port: :name,
            poll_interval: @default_poll_interval,
            dns_client: Caravan.DnsClient.Native,
            nameservers: [],
            timeout: @default_timeout,
            connect_timeout: @default_connect_timeout,
            connect_concurrency: @default_connect_concurrency,
            prune: false,
            node_host: :auto,
            max_nodes: @default_max_nodes,
            leave_after: @default_leave_after,
            report_interval: @default_report_interval,
            record_type: :srv,
            node_basename: nil,
            libcluster: false

  @defaults %{
    poll_interval: @default_poll_interval,
    timeout: @default_timeout,
    connect_timeout: @default_connect_timeout,
    connect_concurrency: @default_connect_concurrency,
    max_nodes: @default_max_nodes,
    leave_after: @default_leave_after,
    report_interval: @default_report_interval
  }

  @type mfa_tuple :: {module(), atom(), [term()]}
  @typedoc "libcluster's `%Cluster.Strategy.State{}`, as the strategy reads it."
  @type libcluster_state :: %{
          required(:config) => keyword(),
          optional(:topology) => atom(),
          optional(:connect | :disconnect | :list_nodes) => mfa_tuple(),
          optional(atom()) => term()
        }
  @type t :: %__MODULE__{
          topology: atom(),
          connect: mfa_tuple(),
          disconnect: mfa_tuple(),
          list_nodes: mfa_tuple(),
          queries: [String.t(), ...],
          node_sname: String.t() | nil,
          node_port: :name | :srv,
          poll_interval: pos_integer(),
          dns_client: module(),
          nameservers: [Options.nameserver()],
          timeout: pos_integer(),
          connect_timeout: pos_integer(),
          connect_concurrency: pos_integer(),
          prune: boolean(),
          node_host: :auto | :target | :ip,
          max_nodes: pos_integer(),
          leave_after: pos_integer(),
          report_interval: pos_integer(),
          record_type: :srv | :a | :aaaa | :ip,
          node_basename: String.t() | nil,
          libcluster: boolean()
        }

  @doc """
  Whether `arg` (as `new/1` takes it: a libcluster state or a keyword
  list) turns discovery off with `query: :ignore`.
  """
  @spec off?(libcluster_state() | keyword()) :: boolean()
  def off?(%{config: config}), do: off?(config)
  def off?(opts), do: is_list(opts) and Keyword.keyword?(opts) and opts[:query] == :ignore

  @doc """
  Builds the config from a libcluster state (a map with `:topology`,
  `:connect`, `:disconnect`, `:list_nodes` and `:config`) or a keyword list
  (the same keys at the top level; `:topology` defaults to `:caravan`).

  Returns `{:ok, config}` or `{:error, {:invalid_option, message}}`, the
  message naming the bad key, its value and what was expected. Never
  raises.
  """
  @spec new(libcluster_state() | keyword()) ::
          {:ok, t()} | {:error, {:invalid_option, String.t()}}
  def new(%{config: config} = state) when is_list(config) do
    base = Map.take(state, [:topology, :connect, :disconnect, :list_nodes])
    build(Enum.reject(base, fn {_k, v} -> is_nil(v) end) ++ config)
  end

  def new(opts) when is_list(opts) do
    if Keyword.keyword?(opts),
      do: build(opts),
      else: invalid("expected a keyword list of options, got: #{inspect(opts)}")
  end

  def new(other),
    do: invalid("expected a libcluster state or a keyword list, got: #{inspect(other)}")

  defp build(opts) do
    opts = aliases(opts)
    defaults = %__MODULE__{}

    with :ok <- check(opts),
         {:ok, query} <-
           fetch(opts, :query, nil, &queries?/1, "a non-empty string or a list of them"),
         {:ok, record_type} <-
           fetch(
             opts,
             :record_type,
             defaults.record_type,
             &(&1 in [:srv, :a, :aaaa, :ip]),
             ":srv, :a, :aaaa or :ip"
           ),
         {:ok, sname, basename} <- names(opts, record_type),
         {:ok, node_port} <- node_port(opts, sname, defaults.node_port),
         {:ok, topology} <- fetch(opts, :topology, defaults.topology, &is_atom/1, "an atom"),
         {:ok, poll} <-
           fetch(
             opts,
             :poll_interval,
             defaults.poll_interval,
             &pos_int/1,
             "a positive integer (ms)"
           ),
         {:ok, timeout} <-
           fetch(
             opts,
             :timeout,
             min(defaults.timeout, poll),
             &pos_int/1,
             "a positive integer (ms)"
           ),
         {:ok, connect_timeout} <-
           fetch(
             opts,
             :connect_timeout,
             defaults.connect_timeout,
             &pos_int/1,
             "a positive integer (ms)"
           ),
         {:ok, concurrency} <-
           fetch(
             opts,
             :connect_concurrency,
             defaults.connect_concurrency,
             &pos_int/1,
             "a positive integer"
           ),
         {:ok, client} <-
           fetch(
             opts,
             :dns_client,
             defaults.dns_client,
             &dns_client?/1,
             "a loaded module with get_nodes/1 or get_nodes/2 (a Caravan.DnsClient: " <>
               "Caravan.DnsClient.Native or Caravan.DnsClient.InetRes)"
           ),
         :ok <- client_for(record_type, opts),
         {:ok, nameservers} <-
           opts |> Keyword.get(:nameservers, []) |> Options.parse() |> prefix(:nameservers),
         {:ok, connect} <-
           fetch(opts, :connect, defaults.connect, &mfa?/1, "an {m, f, args} tuple"),
         {:ok, disconnect} <-
           fetch(opts, :disconnect, defaults.disconnect, &mfa?/1, "an {m, f, args} tuple"),
         {:ok, list_nodes} <-
           fetch(opts, :list_nodes, defaults.list_nodes, &mfa?/1, "an {m, f, args} tuple"),
         {:ok, prune} <- fetch(opts, :prune, defaults.prune, &is_boolean/1, "true or false"),
         {:ok, node_host} <-
           fetch(
             opts,
             :node_host,
             defaults.node_host,
             &match?({:ok, _}, Options.node_host(&1)),
             ":auto, :target or :ip"
           ),
         {:ok, max_nodes} <-
           fetch(opts, :max_nodes, defaults.max_nodes, &pos_int/1, "a positive integer"),
         {:ok, leave_after} <-
           fetch(
             opts,
             :leave_after,
             defaults.leave_after,
             &pos_int/1,
             "a positive integer (authoritative polls)"
           ),
         {:ok, report_interval} <-
           fetch(
             opts,
             :report_interval,
             defaults.report_interval,
             &pos_int/1,
             "a positive integer (ms)"
           ) do
      {:ok,
       %__MODULE__{
         topology: topology,
         connect: connect,
         disconnect: disconnect,
         list_nodes: list_nodes,
         queries: query |> List.wrap() |> Enum.uniq(),
         node_sname: sname,
         node_port: node_port,
         record_type: record_type,
         node_basename: basename,
         libcluster: Caravan.Cluster.Libcluster.available?(),
         poll_interval: poll,
         dns_client: client,
         nameservers: nameservers,
         timeout: timeout,
         connect_timeout: connect_timeout,
         connect_concurrency: concurrency,
         prune: prune,
         node_host: node_host,
         max_nodes: max_nodes,
         leave_after: leave_after,
         report_interval: report_interval
       }}
    end
  end

  @doc """
  The config keys a topology accepts (see `Caravan.Cluster.DnsStrategy`).
  """
  @spec known_keys() :: [atom()]
  def known_keys, do: known()

  @doc """
  The default of `key` (one of `:poll_interval`, `:timeout`,
  `:connect_timeout`, `:connect_concurrency`, `:max_nodes`, `:leave_after`,
  `:report_interval`): ms, a count or a number of polls, as the key says.
  """
  @spec default(atom()) :: pos_integer()
  def default(key), do: Map.fetch!(@defaults, key)
end
