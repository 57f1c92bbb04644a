defmodule Caravan.Epmd.HostResolver do
  @moduledoc false
  # Resolves peer host names for `Caravan.Epmd.Client.address_please/3`
  # through Caravan's own resolver, so nodes named after Consul names
  # (`app-4370@web1.node.dc1.consul`) connect with no `erl_inetrc` and no
  # `/etc/resolv.conf` edits.
  #
  # Configured at boot, before any application starts, from a vm.args flag
  # or, when the flag is absent, the OS environment (-caravan_nameservers /
  # CARAVAN_NAMESERVERS, -caravan_dns_timeout / CARAVAN_DNS_TIMEOUT;
  # examples, the values' form and the order a host is resolved in, in
  # Caravan.Epmd.Client's moduledoc). With none, hosts resolve with
  # `:inet.getaddr/2` as in plain OTP. A topology without nameservers asks
  # these too (nameservers/0, Caravan.DNS.default_nameservers/0).
  #
  # With nameservers configured, an address they gave is kept for at most
  # 1000 ms, so a connect storm (OTP asks `address_please/3` twice per
  # connect, and every node connects to every other at once) is not also a
  # DNS storm. Each poll of the strategy hands the addresses its answers
  # gave (an SRV answer's additional section, from any client) to
  # `remember/2` (Caravan.Cluster.Poll.hand_off/2), so a changed address is
  # seen at the next poll, and within 1000 ms for a host no poll mentions.

  @default_timeout 1_000
  @key {__MODULE__, :config}
  # The setting they came from: "-caravan_nameservers" or "CARAVAN_NAMESERVERS".
  @source {__MODULE__, :source}
  # Addresses the nameservers gave: {{host, family}, ip, expires_at_ms}.
  @cache __MODULE__.Cache
  @cache_ms 1_000

  # Reads the boot configuration (see the module doc) and keeps it for
  # `resolve/2`. Runs at boot, before the file server exists.
  #
  # Returns `:ok`, or `{:error, {:invalid_option, message}}` naming the bad
  # value (the epmd module then stops the boot).
  @doc false
  @spec configure() :: :ok | {:error, {:invalid_option, String.t()}}
  def configure do
    with {:ok, {source, nameservers}} <- boot_nameservers(),
         {:ok, timeout} <- boot_timeout() do
      if nameservers != [], do: own_table(@cache)
      :persistent_term.put(@source, source)
      :persistent_term.put(@key, {nameservers, timeout})
    end
  end

  # The nameservers configured at boot, parsed, with the setting that gave
  # them (@source); `{nil, []}` when none is.
  @doc false
  @spec nameservers() :: {String.t() | nil, [Caravan.DNS.Options.nameserver()]}
  def nameservers, do: {:persistent_term.get(@source, nil), elem(parsed_config(), 0)}

  # Keeps `addresses` (IP tuples, e.g. from an SRV answer's additional
  # section) as `host`'s (a string) for the next 1000 ms, the first of
  # each family being what `resolve/2` returns. Does nothing when no
  # nameservers are configured (hosts then resolve as in plain OTP).
  # Returns `:ok`.
  @doc false
  @spec remember(String.t(), [:inet.ip_address()]) :: :ok
  def remember(host, addresses) when is_binary(host) and is_list(addresses) do
    if :ets.whereis(@cache) != :undefined do
      expires = System.monotonic_time(:millisecond) + @cache_ms
      v4 = Enum.find(addresses, &match?({_, _, _, _}, &1))
      v6 = Enum.find(addresses, &match?({_, _, _, _, _, _, _, _}, &1))
      if v4, do: :ets.insert(@cache, {{host, :inet}, v4, expires})
      if v6, do: :ets.insert(@cache, {{host, :inet6}, v6, expires})
    end

    :ok
  end

  # Makes the public named ETS table `name` unless it exists, owned by a
  # small process that does nothing else, so it outlives whoever configures
  # it (net_kernel may restart). Returns :ok.
  @doc false
  @spec own_table(atom()) :: :ok
  def own_table(name) do
    if :ets.whereis(name) == :undefined do
      caller = self()

      spawn(fn ->
        # The table is named: its id is not needed.
        _ =
          try do
            :ets.new(name, [:named_table, :public, read_concurrency: true])
          rescue
            ArgumentError -> :already_there
          end

        send(caller, {name, :ready})
        Process.sleep(:infinity)
      end)

      receive do
        {^name, :ready} -> :ok
      after
        1_000 -> :ok
      end
    end

    :ok
  end

  defp cached(host, family) do
    now = System.monotonic_time(:millisecond)

    case :ets.whereis(@cache) != :undefined and :ets.lookup(@cache, {host, family}) do
      [{_key, ip, expires}] when expires > now -> {:ok, ip}
      _ -> :miss
    end
  end

  # The configuration in use: `{nameservers, timeout_ms}`, nameservers as
  # `"IP:PORT"`; `{[], timeout_ms}` when none is configured.
  @doc false
  @spec config() :: {[String.t()], pos_integer()}
  def config do
    {parsed, timeout} = parsed_config()
    {Enum.map(parsed, &Caravan.DNS.Options.text/1), timeout}
  end

  # As kept: the nameservers parsed once at boot (`{ip_tuple, port}`), so a
  # host lookup parses no text.
  defp parsed_config, do: :persistent_term.get(@key, {[], @default_timeout})

  # Resolves `host` (a charlist or string) for `family` (`:inet` or
  # `:inet6`) in the order of the module doc.
  #
  # Returns `{:ok, ip_tuple}` or `{:error, reason}` as `:inet.getaddr/2` does;
  # `{:error, :einval}` for an empty host or a host that is not a flat
  # charlist, a UTF-8 string or an atom (nothing is asked then, on every OTP:
  # `:inet.getaddr/2` refuses `""` on OTP 25 but asks the resolver on 27+).
  @doc false
  @spec resolve(charlist() | String.t(), :inet | :inet6) ::
          {:ok, :inet.ip_address()} | {:error, term()}
  def resolve(host, family) do
    case host_charlist(host) do
      {:ok, []} -> {:error, :einval}
      {:ok, host} -> resolve_charlist(host, family)
      :error -> {:error, :einval}
    end
  end

  defp host_charlist(host) when is_atom(host), do: {:ok, Atom.to_charlist(host)}

  defp host_charlist(host) when is_binary(host) do
    case :unicode.characters_to_list(host) do
      list when is_list(list) -> {:ok, list}
      _invalid_utf8 -> :error
    end
  end

  defp host_charlist(host) when is_list(host),
    do: if(:io_lib.char_list(host), do: {:ok, host}, else: :error)

  defp host_charlist(_host), do: :error

  defp resolve_charlist(host, family) do
    case literal(host, family) do
      {:ok, ip} ->
        {:ok, ip}

      :error ->
        case parsed_config() do
          {[_ | _] = nameservers, timeout} ->
            resolve_dns(to_string(host), family, nameservers, timeout)

          _ ->
            :inet.getaddr(host, family)
        end
    end
  end

  defp resolve_dns(host, family, nameservers, timeout) do
    with :miss <- cached(host, family) do
      # Never traced: this runs inside net_kernel's connection setup, also
      # on the helper nodes of bin/app rpc|pid, whose output is the result.
      case Caravan.DNS.lookup_host(host, family,
             nameservers: nameservers,
             timeout: timeout,
             trace: false
           ) do
        {:ok, [ip | _] = ips} ->
          remember(host, ips)
          {:ok, ip}

        _ ->
          :inet.getaddr(String.to_charlist(host), family)
      end
    end
  end

  defp literal(host, :inet), do: ok_or_error(:inet.parse_ipv4strict_address(host))
  defp literal(host, :inet6), do: ok_or_error(:inet.parse_ipv6strict_address(host))
  defp literal(_host, _family), do: :error

  defp ok_or_error({:ok, ip}), do: {:ok, ip}
  defp ok_or_error({:error, _}), do: :error

  defp boot_nameservers do
    case boot_value(:caravan_nameservers, ~c"CARAVAN_NAMESERVERS") do
      nil ->
        {:ok, {nil, []}}

      text ->
        list = text |> String.split(",", trim: true) |> Enum.map(&String.trim/1)

        case Caravan.DNS.Options.parse(list) do
          {:ok, nameservers} ->
            flag? = :init.get_argument(:caravan_nameservers) != :error

            {:ok,
             {if(flag?, do: "-caravan_nameservers", else: "CARAVAN_NAMESERVERS"), nameservers}}

          {:error, {_kind, message}} ->
            {:error,
             {:invalid_option,
              "invalid -caravan_nameservers / CARAVAN_NAMESERVERS #{inspect(text)}: #{message}"}}
        end
    end
  end

  defp boot_timeout do
    case boot_value(:caravan_dns_timeout, ~c"CARAVAN_DNS_TIMEOUT") do
      nil ->
        {:ok, @default_timeout}

      text ->
        case Integer.parse(String.trim(text)) do
          {ms, ""} when ms > 0 ->
            {:ok, ms}

          _ ->
            {:error,
             {:invalid_option,
              "invalid -caravan_dns_timeout / CARAVAN_DNS_TIMEOUT #{inspect(text)}: " <>
                "expected a positive integer (ms)"}}
        end
    end
  end

  # The boot value of vm.args `flag` (an atom) or, when absent, of OS
  # environment variable `env` (a charlist): a string, or nil. The flag wins.
  @doc false
  @spec boot_value(atom(), charlist()) :: String.t() | nil
  def boot_value(flag, env) do
    case :init.get_argument(flag) do
      {:ok, [[value | _] | _]} ->
        List.to_string(value)

      _ ->
        case :os.getenv(env) do
          false -> nil
          value -> List.to_string(value)
        end
    end
  end
end
