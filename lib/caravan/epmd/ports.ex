defmodule Caravan.Epmd.Ports do
  @moduledoc false
  # Where the epmd module gets ports other than from a node name: the port
  # this node listens on (ERL_DIST_PORT / -erl_epmd_port) and, for nodes
  # named "<node_sname>@<host>" (a topology with node_port: :srv), the port
  # of the SRV record that listed them. See the "Dynamic ports" section of
  # guides/deployment.md.
  #
  # The ports of listed nodes live in one ETS table that each poll fills
  # (Caravan.Cluster.Poll.hand_off/2), so a connect to them is one ETS read.
  # A node no poll listed, whose name carries no port, is looked up at
  # connect time with the SRV query named by -caravan_srv_query /
  # CARAVAN_SRV_QUERY (bounded by the resolver timeout), the answer kept
  # for @lookup_ms so the two address_please/3 calls of one connect ask
  # once; no record for it refuses the connect with a reason naming the
  # query.

  alias Caravan.Epmd.HostResolver

  @table __MODULE__
  @query_key {__MODULE__, :srv_query}
  @lookup_ms 1_000

  @typedoc "Where a peer's port came from."
  @type source :: :name | {:srv, :poll | :lookup, String.t()}

  # Reads -caravan_srv_query / CARAVAN_SRV_QUERY and checks the listen port
  # variables at boot: :ok or {:error, {:invalid_option, message}}.
  @doc false
  @spec configure() :: :ok | {:error, {:invalid_option, String.t()}}
  def configure do
    with {:ok, _port} <- listen_override() do
      query =
        String.trim(HostResolver.boot_value(:caravan_srv_query, ~c"CARAVAN_SRV_QUERY") || "")

      :persistent_term.put(@query_key, if(query != "", do: query))
      ensure_table()
    end
  end

  # {:ok, port} set by -erl_epmd_port (OTP's own flag, so it wins) or else
  # ERL_DIST_PORT, {:ok, nil} when neither is set, or {:error,
  # {:invalid_option, message}} for a value that is not a port in 1..65535.
  @doc false
  @spec listen_override() ::
          {:ok, :inet.port_number() | nil} | {:error, {:invalid_option, String.t()}}
  def listen_override do
    case {:init.get_argument(:erl_epmd_port), :os.getenv(~c"ERL_DIST_PORT")} do
      {{:ok, [[flag | _] | _]}, _} -> parse_port("-erl_epmd_port", flag)
      {_, false} -> {:ok, nil}
      {_, env} -> parse_port("ERL_DIST_PORT", env)
    end
  end

  defp parse_port(source, text) do
    case Integer.parse(String.trim(List.to_string(text))) do
      {port, ""} when port in 1..65_535 ->
        {:ok, port}

      _ ->
        {:error,
         {:invalid_option,
          "invalid #{source} #{inspect(List.to_string(text))}: expected a port in 1..65535"}}
    end
  end

  # The port node `name` listens on and why: {:ok, 0, :helper} for the
  # helper nodes of release scripts, {:ok, port, source} with source
  # "-erl_epmd_port" or "ERL_DIST_PORT" when set, else {:ok, port, :name}
  # from the name; {:error, {kind, message}} for an invalid name or value.
  @doc false
  @spec listen_port(atom() | charlist()) ::
          {:ok, :inet.port_number(), :helper | :name | String.t()}
          | {:error, {atom(), String.t()}}
  def listen_port(name) do
    with {:ok, from_name} <- Caravan.Epmd.listen_port(name),
         {:ok, override} <- if(from_name == 0, do: {:ok, nil}, else: listen_override()) do
      cond do
        from_name == 0 -> {:ok, 0, :helper}
        override == nil -> {:ok, from_name, :name}
        :init.get_argument(:erl_epmd_port) != :error -> {:ok, override, "-erl_epmd_port"}
        true -> {:ok, override, "ERL_DIST_PORT"}
      end
    end
  end

  # Keeps the ports one poll of `topology` found (`[{node_name, port}]`,
  # names as strings). With `complete?` (every query answered) the
  # topology's nodes missing from `ports` are forgotten; a failed lookup
  # forgets nothing. Does nothing when the table is missing (the epmd
  # module is not Caravan's). Returns :ok.
  @doc false
  @spec remember(atom(), [{String.t(), :inet.port_number()}], boolean()) :: :ok
  def remember(topology, ports, complete?) do
    if :ets.whereis(@table) != :undefined do
      by_name = Enum.group_by(ports, &elem(&1, 0), &elem(&1, 1))

      rows = if complete?, do: :ets.tab2list(@table), else: []
      stale = for {name, _ports, ^topology} <- rows, not is_map_key(by_name, name), do: name
      Enum.each(stale, &:ets.delete(@table, &1))

      Enum.each(by_name, fn {name, list} ->
        :ets.insert(@table, {name, list |> Enum.uniq() |> Enum.sort(), topology})
      end)
    end

    :ok
  end

  # The port to dial node `name@host` on (name part and host as charlists
  # or strings) and where it came from: {:ok, port, source}, or {:error,
  # {kind, message}} (:ambiguous_port, :no_srv_record, :srv_lookup_failed,
  # or an invalid name's kind). A listed node is one ETS read; see the moduledoc.
  @doc false
  @spec peer_port(charlist() | String.t(), charlist() | String.t()) ::
          {:ok, :inet.port_number(), source()} | {:error, {atom(), String.t()}}
  def peer_port(name, host) do
    node = node_key(name, host)

    case node && lookup(node) do
      [{_, [port], topology}] ->
        {:ok, port, {:srv, :poll, "topology #{topology}"}}

      [{_, ports, topology}] ->
        {:error,
         {:ambiguous_port,
          "#{node} is listed with several ports (#{Enum.join(ports, ", ")}) by topology " <>
            "#{topology}: with node_port: :srv each SRV record needs its own target " <>
            "(or put the port in the name)"}}

      _unlisted ->
        query = :persistent_term.get(@query_key, nil)

        if query != nil and node != nil and node =~ ~r/\A[0-9A-Za-z_-]*[A-Za-z_-]@/,
          do: looked_up(node, node |> String.split("@", parts: 2) |> List.last(), query),
          else: with({:ok, port} <- Caravan.Epmd.fetch_dist_port(name), do: {:ok, port, :name})
    end
  end

  # "name@host" for a name part and a host given as text (atom, string or
  # charlist), else nil: no other shape is ever listed.
  defp node_key(name, host) do
    with {:ok, name} <- text(name),
         {:ok, host} <- text(host),
         false <- String.contains?(name, "@") or host == "" do
      name <> "@" <> host
    else
      _ -> nil
    end
  end

  defp text(value) when is_atom(value), do: {:ok, Atom.to_string(value)}
  defp text(value) when is_binary(value), do: if(String.valid?(value), do: {:ok, value})

  defp text(value) when is_list(value) do
    case :unicode.characters_to_binary(value) do
      binary when is_binary(binary) -> {:ok, binary}
      _ -> nil
    end
  rescue
    ArgumentError -> nil
  end

  defp text(_value), do: nil

  # Whether an error kind of peer_port/2 is a refused dynamic port (rather
  # than an invalid node name).
  @doc false
  @spec refusal?(atom()) :: boolean()
  def refusal?(kind), do: kind in [:no_srv_record, :ambiguous_port, :srv_lookup_failed]

  defp lookup(node) do
    if :ets.whereis(@table) != :undefined, do: :ets.lookup(@table, node), else: []
  end

  defp looked_up(node, host, query) do
    now = System.monotonic_time(:millisecond)

    case lookup({:lookup, node}) do
      [{_, result, expires}] when expires > now ->
        result

      _ ->
        result = srv_lookup(node, host, query)
        # Logged once per lookup: OTP's own trace of a failed setup is off by default.
        with {:error, {_kind, message}} <- result,
             do: :logger.warning(~c"[caravan] ~ts", [message])

        if :ets.whereis(@table) != :undefined,
          do: :ets.insert(@table, {{:lookup, node}, result, now + @lookup_ms})

        result
    end
  end

  # Never traced: this runs inside net_kernel's connection setup.
  defp srv_lookup(node, host, query) do
    {nameservers, timeout} = HostResolver.config()

    opts =
      [timeout: timeout, trace: false] ++
        if(nameservers == [], do: [], else: [nameservers: nameservers])

    case Caravan.DNS.lookup_srv(query, opts) do
      {:ok, records} ->
        ports =
          for %{port: port} = r <- records,
              host in [r.host, r.target] or listed_ip?(host, r),
              uniq: true,
              do: port

        case ports do
          [port] ->
            {:ok, port, {:srv, :lookup, query}}

          [] ->
            refuse(node, query, "none of its #{length(records)} record(s) has target #{host}")

          many ->
            refuse(
              node,
              query,
              "several records have target #{host} (ports #{Enum.join(many, ", ")})"
            )
        end

      {:error, {kind, _}} when kind in [:nxdomain, :nodata] ->
        refuse(node, query, "it has no SRV records (#{kind})")

      {:error, {kind, message}} ->
        {:error,
         {:srv_lookup_failed,
          "cannot connect to #{node} (#{kind}): SRV lookup of #{query} failed: #{message}"}}
    end
  end

  defp listed_ip?(host, record) do
    case :inet.parse_strict_address(String.to_charlist(host)) do
      {:ok, ip} -> ip in record.addresses
      _ -> false
    end
  end

  defp refuse(node, query, why),
    do:
      {:error,
       {:no_srv_record,
        "cannot connect to #{node}: no poll listed it and its name carries no port, and the " <>
          "SRV lookup of #{query} (-caravan_srv_query / CARAVAN_SRV_QUERY) does not list it: " <>
          why}}

  # The table outlives whoever configures it (net_kernel may restart): a
  # small process that does nothing else owns it.
  @doc false
  @spec ensure_table() :: :ok
  def ensure_table, do: HostResolver.own_table(@table)
end
