defmodule Caravan.Cluster.Config do
  @moduledoc """
  The validated configuration of one `Caravan.Cluster.DnsStrategy` topology.

  Built from libcluster's `%Cluster.Strategy.State{}` (its `:config` keyword
  list holds the keys below) or from a keyword list when the strategy is
  started without libcluster. See `Caravan.Cluster.DnsStrategy` for the keys.
  `:query` is kept as `:queries`, a list, so one topology may follow several
  services.
  """

  @default_poll_interval 5_000
  @default_timeout 2_000
  @default_connect_timeout 10_000
  @default_connect_concurrency 16
  @default_max_nodes 1024

  defstruct topology: :caravan,
            connect: {:net_kernel, :connect_node, []},
            disconnect: {:erlang, :disconnect_node, []},
            list_nodes: {:erlang, :nodes, [:connected]},
            queries: [],
            node_sname: nil,
            poll_interval: @default_poll_interval,
            dns_client: Caravan.DnsClient.Native,
            nameservers: [],
            timeout: @default_timeout,
            connect_timeout: @default_connect_timeout,
            connect_concurrency: @default_connect_concurrency,
            prune: false,
            node_host: :auto,
            max_nodes: @default_max_nodes,
            record_type: :srv,
            node_basename: nil,
            libcluster: false

  @type mfa_tuple :: {module(), atom(), [term()]}
  @type t :: %__MODULE__{
          topology: atom(),
          connect: mfa_tuple(),
          disconnect: mfa_tuple(),
          list_nodes: mfa_tuple(),
          queries: [String.t(), ...],
          node_sname: String.t() | nil,
          poll_interval: pos_integer(),
          dns_client: module(),
          nameservers: [String.t()],
          timeout: pos_integer(),
          connect_timeout: pos_integer(),
          connect_concurrency: pos_integer(),
          prune: boolean(),
          node_host: :auto | :target | :ip,
          max_nodes: pos_integer(),
          record_type: :srv | :a | :aaaa | :ip,
          node_basename: String.t() | nil,
          libcluster: boolean()
        }

  @doc """
  Builds the config from a libcluster state (a map with `:topology`,
  `:connect`, `:disconnect`, `:list_nodes` and `:config`) or a keyword list
  (the same keys at the top level; `:topology` defaults to `:caravan`).

  Returns `{:ok, config}` or `{:error, message}` naming the bad key, its
  value and what was expected. Never raises.
  """
  @spec new(map() | keyword()) :: {:ok, t()} | {:error, String.t()}
  def new(%{config: config} = state) when is_list(config) do
    base = Map.take(state, [:topology, :connect, :disconnect, :list_nodes])
    build(Enum.reject(base, fn {_k, v} -> is_nil(v) end) ++ config)
  end

  def new(opts) when is_list(opts) do
    if Keyword.keyword?(opts),
      do: build(opts),
      else: {:error, "expected a keyword list of options, got: #{inspect(opts)}"}
  end

  def new(other),
    do: {:error, "expected a libcluster state or a keyword list, got: #{inspect(other)}"}

  defp build(opts) do
    # Caravan 1.x's first releases called the query :consul_service;
    # libcluster's DNSPoll calls the interval :polling_interval.
    opts = Keyword.put_new_lazy(opts, :query, fn -> opts[:consul_service] end)

    opts =
      if Keyword.has_key?(opts, :polling_interval),
        do: Keyword.put_new(opts, :poll_interval, opts[:polling_interval]),
        else: opts

    defaults = %__MODULE__{}

    with {:ok, query} <-
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
             "a module with get_nodes/1"
           ),
         :ok <- client_for(record_type, opts),
         {:ok, nameservers} <- Caravan.DNS.nameservers(opts) |> reason_to_message(),
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
             &(&1 in [:auto, :target, :ip]),
             ":auto, :target or :ip"
           ),
         {:ok, max_nodes} <-
           fetch(opts, :max_nodes, defaults.max_nodes, &pos_int/1, "a positive integer") do
      {:ok,
       %__MODULE__{
         topology: topology,
         connect: connect,
         disconnect: disconnect,
         list_nodes: list_nodes,
         queries: query |> List.wrap() |> Enum.uniq(),
         node_sname: sname,
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
         max_nodes: max_nodes
       }}
    end
  end

  # SRV records name nodes "<node_sname>-<port>@<target>"; A/AAAA records
  # "<node_basename>@<ip>" (libcluster DNSPoll, dns_cluster), the basename
  # defaulting to this node's name part as dns_cluster does.
  defp names(opts, :srv) do
    with {:ok, sname} <-
           fetch(opts, :node_sname, nil, &sname/1, "a string matching ^[0-9A-Za-z_-]+$"),
         do: {:ok, sname, nil}
  end

  defp names(opts, record_type) do
    expected =
      "a string matching ^[0-9A-Za-z_-]+$ whose trailing digits, if any, are a port " <>
        "in 1..65535 (\"app\" listens on 4370, \"app-4371\" on 4371)"

    default = if Node.alive?(), do: node() |> Atom.to_string() |> String.split("@") |> hd()

    case fetch(opts, :node_basename, default, &basename?/1, expected) do
      {:ok, basename} ->
        {:ok, nil, basename}

      {:error, "missing " <> _} ->
        {:error,
         "missing :node_basename; expected #{expected} (record_type: #{inspect(record_type)} " <>
           "names nodes <node_basename>@<ip>; it defaults to this node's name part, but this " <>
           "node is not distributed)"}

      error ->
        error
    end
  end

  # A custom :dns_client answers SRV queries; A/AAAA lookups are Caravan's own.
  defp client_for(:srv, _opts), do: :ok

  defp client_for(record_type, opts) do
    if Keyword.has_key?(opts, :dns_client),
      do:
        {:error,
         "invalid :dns_client: #{inspect(opts[:dns_client])} with record_type: " <>
           "#{inspect(record_type)}; a :dns_client answers SRV lookups only (record_type: " <>
           ":srv); remove it to look up A/AAAA records natively"},
      else: :ok
  end

  defp fetch(opts, key, default, valid?, expected) do
    case Keyword.get(opts, key, default) do
      nil ->
        {:error, "missing #{inspect(key)}; expected #{expected}"}

      value ->
        if valid?.(value),
          do: {:ok, value},
          else: {:error, "invalid #{inspect(key)}: #{inspect(value)}; expected #{expected}"}
    end
  end

  defp reason_to_message({:error, {_kind, message}}),
    do: {:error, "invalid :nameservers: " <> message}

  defp reason_to_message(ok), do: ok

  defp non_empty_string(value), do: is_binary(value) and String.trim(value) != ""
  defp queries?([_ | _] = list), do: Enum.all?(list, &non_empty_string/1)
  defp queries?(value), do: non_empty_string(value)
  defp sname(value), do: is_binary(value) and value =~ ~r/\A[0-9A-Za-z_-]+\z/

  defp basename?(value),
    do: sname(value) and match?({:ok, _}, Caravan.Epmd.fetch_dist_port(value <> "@h"))

  defp pos_int(value), do: is_integer(value) and value > 0
  defp mfa?({m, f, a}), do: is_atom(m) and is_atom(f) and is_list(a)
  defp mfa?(_), do: false

  defp dns_client?(module) do
    is_atom(module) and Code.ensure_loaded?(module) and
      (function_exported?(module, :get_nodes, 1) or function_exported?(module, :get_nodes, 2))
  end
end
