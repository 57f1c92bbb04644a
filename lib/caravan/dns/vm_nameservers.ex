defmodule Caravan.DNS.VmNameservers do
  @moduledoc false
  # The nameservers of a lookup given none (defaults/0: the epmd module's
  # CARAVAN_NAMESERVERS, else the VM's) and how messages name them. The
  # nameservers the VM was given (see
  # `Caravan.DNS.vm_nameservers/0`, which documents the order): the
  # erl_inetrc file's `{nameserver, IP, Port}` and `{alt_nameserver, ...}`
  # lines (read once per path), then `:inet_db`'s `:nameservers` and
  # `:alt_nameservers`. Parsed (`Caravan.DNS.Options.parse/1`) into
  # `{ip_tuple, port}`, entries that are not nameservers left out,
  # duplicates once.

  alias Caravan.DNS.Options

  @doc "The VM's nameservers as `{ip_tuple, port}`, in the order asked; `[]` when none."
  @spec parsed() :: [Options.nameserver()]
  def parsed do
    entries =
      inetrc_nameservers() ++
        List.wrap(safe_res_option(:nameservers)) ++ List.wrap(safe_res_option(:alt_nameservers))

    for entry <- entries, {:ok, [parsed]} <- [Options.parse([entry])], uniq: true, do: parsed
  end

  @vm "the VM's resolver"

  @doc """
  The nameservers a lookup given none asks, `{source, [{ip_tuple, port}]}`,
  in the order of `Caravan.DNS.default_nameservers/0`: the epmd module's
  (source `"-caravan_nameservers"` or `"CARAVAN_NAMESERVERS"`), else the
  VM's (`"the VM's resolver"`), else `{"/etc/resolv.conf", []}`.
  """
  @spec defaults() :: {String.t(), [Options.nameserver()]}
  def defaults do
    with {nil, []} <- Caravan.Epmd.HostResolver.nameservers() do
      case parsed() do
        [] -> {"/etc/resolv.conf", []}
        parsed -> {@vm, parsed}
      end
    end
  end

  @doc """
  For messages: the nameservers a lookup given `parsed` (`[]`: none) asks,
  `"IP:PORT, ..."`, the defaults naming their source.
  """
  @spec asked_text([Options.nameserver()]) :: String.t()
  def asked_text([]) do
    case defaults() do
      {source, []} -> "the nameservers in #{source}"
      {source, list} -> "#{Enum.map_join(list, ", ", &Options.text/1)} (from #{source})"
    end
  end

  def asked_text(parsed), do: Enum.map_join(parsed, ", ", &Options.text/1)

  @doc """
  The nameservers a lookup given `parsed` asks and how it completes a name
  that is not fully qualified, `{nameservers, {domains, ndots}}`: as
  `:inet_res` does for the VM's nameservers (its `domain` then `search`
  list, from resolv.conf or an erl_inetrc, and its `ndots`); names are
  absolute (`{[], 1}`) for nameservers given to Caravan, the epmd module's
  included; with none, the system's resolv.conf gives both natively.
  """
  @spec with_search([Options.nameserver()]) ::
          {[Options.nameserver()], {[String.t()], non_neg_integer()}}
  def with_search([]) do
    case defaults() do
      {@vm, vm} -> {vm, {search_domains(), vm_ndots()}}
      {_given, list} -> {list, {[], 1}}
    end
  end

  def with_search(given), do: {given, {[], 1}}

  defp search_domains do
    domains = [safe_res_option(:domain) | List.wrap(safe_res_option(:search))]
    for d <- domains, d not in [[], "", nil], uniq: true, do: to_string(d)
  end

  defp vm_ndots, do: with(n when not is_integer(n) <- safe_res_option(:ndots), do: 1)

  defp safe_res_option(option) do
    :inet_db.res_option(option)
  catch
    # inet_db not running (a bare VM at boot): no VM configuration.
    _, _ -> []
  end

  # The nameserver lines of the VM's erl_inetrc, read once per path.
  defp inetrc_nameservers do
    case inetrc_path() do
      nil ->
        []

      path ->
        key = {__MODULE__, :inetrc, path}

        case :persistent_term.get(key, nil) do
          nil ->
            found = read_inetrc(path)
            :persistent_term.put(key, found)
            found

          found ->
            found
        end
    end
  end

  defp inetrc_path do
    case :application.get_env(:kernel, :inetrc) do
      {:ok, path} when is_list(path) or is_binary(path) -> to_string(path)
      _ -> System.get_env("ERL_INETRC")
    end
  end

  defp read_inetrc(path) do
    case :file.consult(path) do
      {:ok, terms} ->
        main = for {:nameserver, ip, port} <- terms, do: {ip, port}
        main = main ++ for({:nameserver, ip} <- terms, do: {ip, 53})
        alt = for {:alt_nameserver, ip, port} <- terms, do: {ip, port}
        main ++ alt ++ for({:alt_nameserver, ip} <- terms, do: {ip, 53})

      {:error, _} ->
        []
    end
  end
end
