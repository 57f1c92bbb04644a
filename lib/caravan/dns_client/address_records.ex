defmodule Caravan.DnsClient.AddressRecords do
  @moduledoc false
  # Discovery from A/AAAA records (record_type: :a | :aaaa | :ip), as
  # libcluster's DNSPoll and dns_cluster do it: every address of the query
  # is a peer named "<node_basename>@<ip>", its distribution port the port
  # rule's (Caravan.Epmd: the basename's trailing digits, else 4370), so
  # nodes keep the names they had under those libraries. IPv6 addresses are
  # written as :inet.ntoa/1 writes them (RFC 5952, "fd00::1"), as DNSPoll
  # and dns_cluster write them; such node names are valid in OTP and
  # Caravan.Epmd.Client.address_please/3 reads the host as an IP literal.
  # The lookups are Caravan's native ones (Caravan.DNS.lookup_host/3); the
  # strategy asks it in place of its :dns_client (Caravan.Cluster.Poll).

  @families %{a: [:inet], aaaa: [:inet6], ip: [:inet, :inet6]}

  @doc """
  Looks up the addresses of `query` for `opts[:record_type]` (`:a`,
  `:aaaa`, or `:ip`: A and AAAA, asked at once) with `opts[:nameservers]`
  and `opts[:timeout]` (ms), as `Caravan.DNS.lookup_host/3` takes them.
  Returns `{:ok, [{:address, ip}]}` (NXDOMAIN and NODATA are an empty
  answer for that family) or `{:error, reason}` when any family's answer
  is unknown (a timeout, a server failure), so the strategy never reads a
  failed lookup as "no peers".
  """
  @spec get_nodes(String.t(), keyword()) ::
          {:ok, [{:address, :inet.ip_address()}]} | {:error, term()}
  def get_nodes(query, opts) do
    {type, opts} = Keyword.pop!(opts, :record_type)

    @families
    |> Map.fetch!(type)
    |> Enum.map(fn family -> Task.async(fn -> lookup(query, family, opts) end) end)
    |> Task.await_many(:infinity)
    |> Enum.reduce({:ok, []}, fn
      {:ok, ips}, {:ok, acc} -> {:ok, acc ++ ips}
      {:error, _} = error, {:ok, _} -> error
      _answer, error -> error
    end)
    |> case do
      {:ok, ips} -> {:ok, ips |> Enum.uniq() |> Enum.map(&{:address, &1})}
      error -> error
    end
  end

  # Caravan.DNS.lookup_host/3 bounds itself (timeout + a short grace).
  defp lookup(query, family, opts) do
    case Caravan.DNS.lookup_host(query, family, opts) do
      {:ok, ips} -> {:ok, ips}
      {:error, {kind, _}} when kind in [:nxdomain, :nodata] -> {:ok, []}
      {:error, _} = error -> error
    end
  end

  @doc """
  The node name string `"<basename>@<ip>"` for an address, checked by the
  port rule (no atom is made): `{:ok, name}` or `{:error, {kind, message}}`.

      iex> Caravan.DnsClient.AddressRecords.node_name("app", {10, 0, 0, 7})
      {:ok, "app@10.0.0.7"}
      iex> Caravan.DnsClient.AddressRecords.node_name("app-4371", {0xFD00, 0, 0, 0, 0, 0, 0, 1})
      {:ok, "app-4371@fd00::1"}
  """
  @spec node_name(String.t(), :inet.ip_address()) ::
          {:ok, String.t()} | {:error, {atom(), String.t()}}
  def node_name(basename, ip) when is_binary(basename) do
    case :inet.ntoa(ip) do
      {:error, _} ->
        {:error, {:invalid_record, "expected an IP address, got: #{inspect(ip)}"}}

      text ->
        name = "#{basename}@#{text}"

        case Caravan.Epmd.fetch_dist_port(name) do
          {:ok, _port} -> {:ok, name}
          {:error, _} = error -> error
        end
    end
  end
end
