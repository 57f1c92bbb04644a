defmodule Caravan.Diagnose.Lookup do
  @moduledoc false
  # One DNS lookup of a topology's query, made now for the report
  # (Caravan.Diagnose): through the topology's DNS client, records mapped
  # to node names as the poll names them. Changes nothing.

  @doc """
  Looks `query` up now as the topology `config` (a
  `Caravan.Cluster.Config`) would. Returns `{query, result, nodes}`:
  `result` is `{:ok, record_count}` (`{:ok, record_count, name}` when the
  query was completed from the search list into `name`), `{:none, text}`
  (NXDOMAIN/NODATA) or `{:error, text}`; `nodes` are the node names the records map to (at most
  `config.max_nodes` records are mapped). A/AAAA topologies use the
  strategy's own poll (`Caravan.Cluster.Poll`).
  """
  @spec run(Caravan.Cluster.Config.t(), String.t()) ::
          {String.t(),
           {:ok, non_neg_integer()}
           | {:ok, non_neg_integer(), String.t()}
           | {:none, String.t()}
           | {:error, String.t()}, [node()]}
  def run(%{record_type: type} = config, query) when type != :srv do
    result = Caravan.Cluster.Poll.run(%{config | queries: [query]})

    case result.errors do
      [{_query, reason} | _] -> {query, {:error, inspect(reason)}, []}
      [] -> {query, {:ok, length(result.found)}, result.found}
    end
  end

  def run(config, query) do
    result =
      if config.dns_client == Caravan.DnsClient.Native do
        case Caravan.DNS.lookup_srv(query,
               nameservers: config.nameservers,
               timeout: config.timeout,
               node_host: config.node_host
             ) do
          {:ok, records} ->
            peers = for %{port: p, host: h} <- records, is_binary(h), do: {p, h}
            {:ok, peers, Map.get(hd(records), :name)}

          {:error, {kind, message}} when kind in [:nxdomain, :nodata] ->
            {:none, "#{kind}: #{message}"}

          {:error, {kind, message}} ->
            {:error, "#{kind}: #{message}"}
        end
      else
        try do
          case config.dns_client.get_nodes(query) do
            {:ok, peers} when is_list(peers) -> {:ok, peers}
            {:error, reason} -> {:error, inspect(reason)}
            peers when is_list(peers) -> {:ok, peers}
            other -> {:error, "the DNS client returned #{inspect(other)}"}
          end
        catch
          kind, reason -> {:error, Exception.format_banner(kind, reason)}
        end
      end

    case result do
      {:ok, peers} -> mapped(config, query, peers, nil)
      {:ok, peers, answered} -> mapped(config, query, peers, answered)
      {:none, text} -> {query, {:none, text}, []}
      {:error, text} -> {query, {:error, text}, []}
    end
  end

  defp mapped(config, query, peers, answered) do
    count = if answered, do: {:ok, length(peers), answered}, else: {:ok, length(peers)}
    {query, count, nodes(config, peers)}
  end

  defp nodes(config, peers) do
    for {port, host} when is_integer(port) and (is_binary(host) or is_list(host)) <-
          Enum.take(peers, config.max_nodes),
        {:ok, node} <- [node_name(config, port, to_string(host))],
        do: node
  end

  defp node_name(%{node_port: :srv} = config, port, host) do
    with {:ok, name} <- Caravan.Epmd.NodeName.build_srv(config.node_sname, port, host),
         do: {:ok, String.to_atom(name)}
  end

  defp node_name(config, port, host), do: Caravan.Epmd.node_name(config.node_sname, port, host)
end
