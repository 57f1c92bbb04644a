defmodule Caravan.DNS.VmNameservers do
  @moduledoc false
  # The nameservers the VM was given, for a lookup given none (see
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

  @doc """
  The VM resolver's search rule, as `:inet_res` applies it to the VM's
  nameservers: `{domains, ndots}`, `domains` its `domain` then its
  `search` list (from resolv.conf or an erl_inetrc), duplicates once.
  """
  @spec search() :: {[String.t()], non_neg_integer()}
  def search do
    domains = [safe_res_option(:domain) | List.wrap(safe_res_option(:search))]
    ndots = safe_res_option(:ndots)

    {for(d <- domains, d not in [[], "", nil], uniq: true, do: to_string(d)),
     if(is_integer(ndots), do: ndots, else: 1)}
  end

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
