defmodule Caravan.DnsClient.InetRes do
  @moduledoc """
  The Caravan 1.x `Caravan.DnsClient`: SRV lookups with OTP's own resolver,
  `:inet_res`, for users who want OTP's resolver rather than Caravan's
  native one (`Caravan.DnsClient.Native`, the default).

      config :libcluster,
        topologies: [
          app: [
            strategy: Caravan.Cluster.DnsStrategy,
            config: [query: "app.service.consul", node_sname: "app",
                     dns_client: Caravan.DnsClient.InetRes]
          ]
        ]

  It honours the VM's inet configuration as 1.x did: with no
  `:nameservers` option, `:inet_res` asks the epmd module's nameservers
  when set (`CARAVAN_NAMESERVERS`, as `Caravan.DNS.default_nameservers/0`),
  else the nameservers of the VM (an erl_inetrc's `{nameserver, IP, Port}`,
  else `/etc/resolv.conf`), with the VM's `edns`, `retry` and other
  `:inet_res` options.

  ## How it asks

  1. UDP with EDNS0 (`edns: 0`, `udp_payload_size: 1232`); `:inet_res`
     itself asks again over TCP when TC is set.
  2. When that answer holds 3 or more SRV records, it may have been
     trimmed silently (Consul's `udp_answer_limit` is 3, and with EDNS0
     Consul drops records to fit the payload without setting TC), so the
     query is repeated over TCP (`usevc: true`, one connection per query,
     closed by `:inet_res` after the answer), which returns every record.

  ## What it cannot see (use `Caravan.DnsClient.Native` for these)

    * The size of a UDP reply: `:inet_res` does not expose it, so any
      answer of 3 or more records costs a second query over TCP, where the
      native client stays on UDP when the answer left room for more.
    * Its lookups block the calling process (the strategy's poll task) for
      up to `:timeout` per nameserver try, and a closed nameserver port is
      retried per `:inet_res`'s `retry` option.
    * With `node_host: :ip`, a target without an address in the answer's
      additional section is resolved through the VM's resolver (`:inet`).

  Each SRV record becomes `{port, host}` under `:node_host` as in
  `Caravan.DNS` (`:auto`: the target, except Consul
  `<hex>.addr.<dc>.consul` targets, which become their IP address).
  NXDOMAIN and NODATA are `{:ok, []}`; anything else that fails is
  `{:error, {kind, message}}`, never "no peers".
  """
  @behaviour Caravan.DnsClient

  @payload 1232
  # Consul's default udp_answer_limit (agent/dns.go).
  @udp_answer_limit 3
  @default_timeout 2_000

  @doc """
  `get_nodes(query, [])`: the VM's nameservers, a 2000 ms timeout.
  Returns as `get_nodes/2`.
  """
  @impl Caravan.DnsClient
  def get_nodes(query), do: get_nodes(query, [])

  @doc """
  Looks up the SRV records of `query` (a string) with `:inet_res`.

  Options: `:nameservers` (as in `Caravan.DNS`; default the VM's),
  `:timeout` (ms per query try, default #{@default_timeout}), `:node_host`
  (`:auto`, `:target` or `:ip`).

  Returns `{:ok, peers}` (sorted `{port, host}` tuples; with `addresses:
  true`, `{port, host, ips}` when the additional section gave the
  target's addresses, as `Caravan.DnsClient` says) or
  `{:error, {kind, message}}`; the message names the nameservers asked.
  """
  @impl Caravan.DnsClient
  def get_nodes(query, opts) when is_binary(query) and is_list(opts) do
    with {:ok, ns} <- Caravan.DNS.Options.parse(Keyword.get(opts, :nameservers, [])),
         ns = if(ns == [], do: elem(Caravan.Epmd.HostResolver.nameservers(), 1), else: ns),
         ns_opts = if(ns == [], do: [], else: [nameservers: ns]),
         base = [timeout: Keyword.get(opts, :timeout, @default_timeout)] ++ ns_opts,
         {:ok, msg} <- resolve(query, [edns: 0, udp_payload_size: @payload] ++ base),
         {:ok, msg} <- confirm(query, msg, base) do
      node_host = Keyword.get(opts, :node_host, :auto)
      {:ok, msg |> peers(node_host, Keyword.get(opts, :addresses, false)) |> Enum.sort()}
    else
      :no_records -> {:ok, []}
      {:error, {kind, message}} -> {:error, {kind, "#{message} (asked #{asked(opts)})"}}
    end
  end

  defp confirm(query, msg, base) do
    if length(srvs(msg)) >= @udp_answer_limit,
      do: resolve(query, [usevc: true] ++ base),
      else: {:ok, msg}
  end

  defp resolve(query, opts) do
    case :inet_res.resolve(String.to_charlist(query), :in, :srv, opts) do
      {:ok, msg} ->
        if srvs(msg) == [], do: :no_records, else: {:ok, msg}

      {:error, reason} ->
        error(reason)
    end
  end

  defp error(:nxdomain), do: :no_records
  defp error({:nxdomain, _msg}), do: :no_records
  defp error({reason, _msg}) when is_atom(reason), do: error(reason)
  defp error(:timeout), do: {:error, {:timeout, "no answer from :inet_res"}}

  defp error(reason) when reason in [:servfail, :refused, :formerr, :notimp, :badvers],
    do: {:error, {:server_failure, "the nameserver answered #{reason}"}}

  defp error(reason), do: {:error, {:transport, ":inet_res failed: #{inspect(reason)}"}}

  defp asked(opts) do
    case {Caravan.DNS.Options.nameservers(Keyword.get(opts, :nameservers, [])),
          Caravan.Epmd.HostResolver.nameservers()} do
      {{:ok, [_ | _] = list}, _} -> Enum.join(list, ", ")
      {_, {source, _}} when source != nil -> Caravan.DNS.asked_text([])
      _ -> "the VM's nameservers: " <> Enum.join(vm_or_resolv(), ", ")
    end
  end

  defp vm_or_resolv do
    case Caravan.DNS.vm_nameservers() do
      [] -> ["/etc/resolv.conf"]
      list -> list
    end
  end

  defp srvs(msg) do
    for rr <- :inet_dns.msg(msg, :anlist), :inet_dns.rr(rr, :type) == :srv do
      {_priority, _weight, port, target} = :inet_dns.rr(rr, :data)
      {port, target |> to_string() |> String.trim_trailing(".")}
    end
  end

  # The A/AAAA records of the additional section, by lower-case name.
  defp additional_addresses(msg) do
    for rr <- :inet_dns.msg(msg, :arlist),
        :inet_dns.rr(rr, :type) in [:a, :aaaa],
        reduce: %{} do
      acc ->
        name = rr |> :inet_dns.rr(:domain) |> to_string() |> String.downcase()
        Map.update(acc, name, [:inet_dns.rr(rr, :data)], &(&1 ++ [:inet_dns.rr(rr, :data)]))
    end
  end

  # With addresses? the target's addresses ride along when the host is the
  # target (Caravan.DnsClient: the strategy hands them to the epmd module).
  defp peers(msg, node_host, addresses?) do
    addresses = additional_addresses(msg)

    for {port, target} <- srvs(msg) do
      ips = Map.get(addresses, String.downcase(target), [])

      case host(node_host, target, ips) do
        {:ok, ^target} when addresses? and ips != [] -> {port, target, ips}
        {:ok, host} -> {port, host}
        :error -> Caravan.DnsClient.no_address(target)
      end
    end
  end

  defp host(:target, target, _addresses), do: {:ok, target}

  defp host(:auto, target, _addresses) do
    case addr_ip(target) do
      {:ok, ip} -> {:ok, ntoa(ip)}
      :error -> {:ok, target}
    end
  end

  defp host(:ip, target, addresses) do
    with :error <- addr_ip(target),
         [] <- addresses,
         {:error, _} <- :inet.getaddr(String.to_charlist(target), :inet),
         {:error, _} <- :inet.getaddr(String.to_charlist(target), :inet6) do
      :error
    else
      {:ok, ip} -> {:ok, ntoa(ip)}
      [ip | _] -> {:ok, ntoa(ip)}
    end
  end

  # Consul's `<hex-ip>.addr.<dc>.consul` (8 hex digits IPv4, 32 IPv6): the
  # same rule as the native client's (caravan_core's target module).
  defp addr_ip(target) do
    with [hex, label | _] <- String.split(target, "."),
         true <- String.downcase(label) == "addr" and byte_size(hex) in [8, 32],
         {:ok, bin} <- Base.decode16(hex, case: :mixed) do
      case bin do
        <<a, b, c, d>> -> {:ok, {a, b, c, d}}
        _ -> {:ok, List.to_tuple(for <<s::16 <- bin>>, do: s)}
      end
    else
      _ -> :error
    end
  end

  defp ntoa(ip), do: ip |> :inet.ntoa() |> to_string()
end
