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
  @default_leave_after 3

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
            leave_after: @default_leave_after

  @type mfa_tuple :: {module(), atom(), [term()]}
  @type t :: %__MODULE__{
          topology: atom(),
          connect: mfa_tuple(),
          disconnect: mfa_tuple(),
          list_nodes: mfa_tuple(),
          queries: [String.t(), ...],
          node_sname: String.t(),
          poll_interval: pos_integer(),
          dns_client: module(),
          nameservers: [String.t()],
          timeout: pos_integer(),
          connect_timeout: pos_integer(),
          connect_concurrency: pos_integer(),
          prune: boolean(),
          node_host: :auto | :target | :ip,
          max_nodes: pos_integer(),
          leave_after: pos_integer()
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
    # Caravan 1.x's first releases called the query :consul_service.
    opts = Keyword.put_new_lazy(opts, :query, fn -> opts[:consul_service] end)
    defaults = %__MODULE__{}

    with {:ok, query} <-
           fetch(opts, :query, nil, &queries?/1, "a non-empty string or a list of them"),
         {:ok, sname} <-
           fetch(opts, :node_sname, nil, &sname/1, "a string matching ^[0-9A-Za-z_-]+$"),
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
           fetch(opts, :max_nodes, defaults.max_nodes, &pos_int/1, "a positive integer"),
         {:ok, leave_after} <-
           fetch(
             opts,
             :leave_after,
             defaults.leave_after,
             &pos_int/1,
             "a positive integer (authoritative polls)"
           ) do
      {:ok,
       %__MODULE__{
         topology: topology,
         connect: connect,
         disconnect: disconnect,
         list_nodes: list_nodes,
         queries: query |> List.wrap() |> Enum.uniq(),
         node_sname: sname,
         poll_interval: poll,
         dns_client: client,
         nameservers: nameservers,
         timeout: timeout,
         connect_timeout: connect_timeout,
         connect_concurrency: concurrency,
         prune: prune,
         node_host: node_host,
         max_nodes: max_nodes,
         leave_after: leave_after
       }}
    end
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
  defp pos_int(value), do: is_integer(value) and value > 0
  defp mfa?({m, f, a}), do: is_atom(m) and is_atom(f) and is_list(a)
  defp mfa?(_), do: false

  defp dns_client?(module) do
    is_atom(module) and Code.ensure_loaded?(module) and
      (function_exported?(module, :get_nodes, 1) or function_exported?(module, :get_nodes, 2))
  end
end
