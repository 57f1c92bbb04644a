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
  `:timeout` in ms, `:node_host`; see `Caravan.DNS`).

  Returns `{:ok, peers}`, sorted, where each peer is `{port, host}`, or
  `{:invalid, message}` for a record with no usable host (`node_host: :ip`
  and no address); or `{:error, {kind, message}}`.
  """
  @impl Caravan.DnsClient
  def get_nodes(query, opts) do
    case Caravan.DNS.lookup_srv(query, Keyword.take(opts, [:nameservers, :timeout, :node_host])) do
      {:ok, records} ->
        Enum.each(records, &remember_address/1)
        {:ok, records |> Enum.map(&peer/1) |> Enum.sort()}

      {:error, {kind, _}} when kind in [:nxdomain, :nodata] ->
        {:ok, []}

      {:error, _} = error ->
        error
    end
  end

  # The target's addresses from the answer, for Caravan's epmd module
  # (Caravan.Epmd.HostResolver): connecting to the node then asks DNS
  # nothing more.
  defp remember_address(%{target: target, addresses: [_ | _] = addresses}),
    do: Caravan.Epmd.HostResolver.remember(target, addresses)

  defp remember_address(_record), do: :ok

  defp peer(%{port: port, host: host}) when is_binary(host), do: {port, host}

  defp peer(%{target: target}), do: Caravan.DnsClient.no_address(target)
end
