defmodule Caravan.DnsClient.Native do
  @moduledoc """
  The default `Caravan.DnsClient`: SRV lookups through `Caravan.DNS`.

  NXDOMAIN and NODATA mean "no peers" (`{:ok, []}`); timeouts, server
  failures and transport errors are returned as `{:error, {kind, message}}`
  so the strategy never reads them as "no peers".
  """
  @behaviour Caravan.DnsClient

  @doc """
  `get_nodes(query, opts)` with the system's nameservers and the default
  timeout. Returns `{:ok, [{port, target}]}` or `{:error, {kind, message}}`.
  """
  @impl Caravan.DnsClient
  def get_nodes(query), do: get_nodes(query, [])

  @doc """
  Looks up the SRV records of `query` with `opts` (`:nameservers`,
  `:timeout` in ms; see `Caravan.DNS`). Returns `{:ok, [{port, target}]}`,
  sorted, or `{:error, {kind, message}}`.
  """
  @impl Caravan.DnsClient
  def get_nodes(query, opts) do
    case Caravan.DNS.lookup_srv(query, Keyword.take(opts, [:nameservers, :timeout])) do
      {:ok, records} -> {:ok, records |> Enum.map(&{&1.port, &1.target}) |> Enum.sort()}
      {:error, {kind, _}} when kind in [:nxdomain, :nodata] -> {:ok, []}
      {:error, _} = error -> error
    end
  end
end
