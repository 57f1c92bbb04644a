defmodule Caravan.DnsClient.Native do
  @moduledoc """
  The default `Caravan.DnsClient`: SRV lookups through `Caravan.DNS`.

  Each record becomes `{port, host}`, `host` chosen by the `:node_host`
  option (see `Caravan.DNS`). NXDOMAIN and NODATA mean "no peers"
  (`{:ok, []}`); timeouts, server failures and transport errors are
  returned as `{:error, {kind, message}}` so the strategy never reads them
  as "no peers".
  """
  @behaviour Caravan.DnsClient

  @doc """
  `get_nodes(query, opts)` with the system's nameservers and the default
  timeout. Returns `{:ok, [{port, host}]}` or `{:error, {kind, message}}`.
  """
  @impl Caravan.DnsClient
  def get_nodes(query), do: get_nodes(query, [])

  @doc """
  Looks up the SRV records of `query` with `opts` (`:nameservers`,
  `:timeout` in ms, `:node_host`; see `Caravan.DNS`; `:addresses`, see
  `Caravan.DnsClient`; `:early`, a function that gets the peers of a
  doubted UDP answer, in the shape below, while the complete answer is
  asked over TCP: see `Caravan.DNS`).

  Returns `{:ok, peers}`, sorted, where each peer is `{port, host}` (with
  `addresses: true`, `{port, host, ips}` when the answer's additional
  section gave the target's addresses), or `{:invalid, message}` for a
  record with no usable host (`node_host: :ip` and no address); or
  `{:error, {kind, message}}`.
  """
  @impl Caravan.DnsClient
  def get_nodes(query, opts) do
    addresses? = Keyword.get(opts, :addresses, false)
    dns_opts = Keyword.take(opts, [:nameservers, :timeout, :node_host])

    dns_opts =
      case Keyword.get(opts, :early) do
        early when is_function(early, 1) ->
          [{:early, fn records -> early.(peers(records, addresses?)) end} | dns_opts]

        _ ->
          dns_opts
      end

    case Caravan.DNS.lookup_srv(query, dns_opts) do
      {:ok, records} ->
        {:ok, peers(records, addresses?)}

      {:error, {kind, _}} when kind in [:nxdomain, :nodata] ->
        {:ok, []}

      {:error, _} = error ->
        error
    end
  end

  defp peers(records, addresses?), do: records |> Enum.map(&peer(&1, addresses?)) |> Enum.sort()

  # The addresses are the target's, so they are the host's only when the
  # host is the target (not an IP from .addr. or node_host: :ip).
  defp peer(%{port: port, host: host, target: host, addresses: [_ | _] = ips}, true),
    do: {port, host, ips}

  defp peer(%{port: port, host: host}, _addresses?) when is_binary(host), do: {port, host}

  defp peer(%{target: target}, _addresses?), do: Caravan.DnsClient.no_address(target)
end
