defmodule Caravan.Cluster.Poll do
  @moduledoc false
  # One poll of a topology, run in its own process by the strategy: look up
  # every query (in parallel, each sending [:caravan, :lookup] telemetry),
  # turn the records into node names (at most max_nodes atoms), decide
  # whether the answer is authoritative, read the connected nodes (once per
  # poll) and compute the nodes to connect. Its one side effect is the
  # hand-off of the answers' addresses and ports to the epmd module
  # (hand_off/2); the strategy acts on the result (Caravan.Cluster.Act).

  alias Caravan.Cluster.Config
  alias Caravan.DnsClient.AddressRecords
  alias Caravan.Epmd.{HostResolver, NodeName, Ports}

  @type t :: %{
          found: [node()],
          answered: [String.t()],
          errors: [{String.t(), term()}],
          invalid: [String.t()],
          dropped: non_neg_integer(),
          authoritative?: boolean(),
          connected: [node()],
          new: [node()]
        }

  @typedoc "What names/2 returns: a result without `:connected` and `:new`."
  @type names :: %{
          found: [node()],
          answered: [String.t()],
          errors: [{String.t(), term()}],
          invalid: [String.t()],
          dropped: non_neg_integer(),
          authoritative?: boolean()
        }

  @doc """
  Runs one poll (`early_dial?`: dialing a doubted UDP answer's peers meanwhile).
  What to do about nodes DNS no longer lists is decided by the strategy.
  """
  @spec run(Config.t(), boolean()) :: t()
  def run(%Config{list_nodes: {m, f, a}} = config, early_dial? \\ true) do
    {answers, addresses} = config |> lookup_all(early_dial?) |> Enum.unzip()
    hand_off(List.flatten(addresses), ports(answers, config))
    connected = apply(m, f, a)
    answers |> names(config) |> diff(connected)
  end

  @doc """
  Hands the addresses the answers gave (`[{host, ips}]`, from every
  client's `{port, host, ips}` peers) to the epmd module
  (`Caravan.Epmd.HostResolver.remember/2`) and, for a `node_port: :srv`
  topology, its nodes' ports (`{topology, [{node_name, port}], complete?}`,
  `Caravan.Epmd.Ports.remember/3`; `nil` otherwise), so connecting to
  those nodes asks DNS nothing more. The poll's one write outside its
  result; `:ok`.
  """
  @spec hand_off(
          [{String.t(), [:inet.ip_address()]}],
          {atom(), [{String.t(), :inet.port_number()}], boolean()} | nil
        ) :: :ok
  def hand_off(addresses, ports \\ nil) do
    Enum.each(addresses, fn {host, ips} -> HostResolver.remember(host, ips) end)
    with {topology, list, complete?} <- ports, do: Ports.remember(topology, list, complete?)
    :ok
  end

  # A node_port: :srv topology's nodes and their SRV ports (names as
  # strings, no atoms), complete when every query answered.
  defp ports(answers, %Config{node_port: :srv} = config) do
    ports =
      for {_query, {:ok, peers}} <- answers,
          {port, host} <- peers,
          is_binary(host),
          {:ok, name} <- [NodeName.build_srv(config.node_sname, port, host)],
          do: {name, port}

    {config.topology, ports, Enum.all?(answers, &match?({_, {:ok, _}}, &1))}
  end

  defp ports(_answers, _config), do: nil

  @doc """
  The node names of the answers (`[{query, {:ok, peers} | {:error,
  reason}}]`): valid, unique, sorted and capped at `max_nodes` before any
  atom is made.
  """
  @spec names([{String.t(), {:ok, list()} | {:error, term()}}], Config.t()) :: names()
  def names(answers, %Config{} = config) do
    errors = for {query, {:error, reason}} <- answers, do: {query, reason}
    peers = for {_query, {:ok, peers}} <- answers, peer <- peers, do: peer
    {names, invalid} = node_names(peers, config)
    dropped = max(length(names) - config.max_nodes, 0)

    %{
      # The cap comes before String.to_atom/1: a poll makes at most
      # max_nodes new atoms, whatever the answer holds.
      found: names |> Enum.take(config.max_nodes) |> Enum.map(&String.to_atom/1),
      answered: for({query, {:ok, _}} <- answers, do: query),
      errors: errors,
      invalid: invalid,
      dropped: dropped,
      # Every query answered (NXDOMAIN and NODATA count) and none dropped.
      authoritative?: errors == [] and dropped == 0
    }
  end

  @doc """
  Adds `:connected` (the connected nodes, a list or set) and `:new` (found,
  not this node, not connected) to the result of names/2.
  """
  @spec diff(names(), Enumerable.t()) :: t()
  def diff(result, connected) do
    set = MapSet.new(connected)
    new = Enum.reject(result.found, &(&1 == node() or MapSet.member?(set, &1)))
    Map.merge(result, %{connected: Enum.to_list(connected), new: new})
  end

  @doc """
  Ms until the next poll: `poll_interval` ms give or take 10%, `u` (a float
  in `[0, 1)`, random by default) choosing where. The mean stays
  `poll_interval`. Nodes booted together would otherwise keep polling the
  nameserver in the same millisecond and overflow its listen queue; spread
  like this, they drift apart within a few polls (measured in
  `bench/README.md`). The first poll is not delayed.

      iex> Caravan.Cluster.Poll.next_delay(1000, 0.0)
      900
      iex> Caravan.Cluster.Poll.next_delay(1000, 0.5)
      1000
      iex> Caravan.Cluster.Poll.next_delay(1000, 0.9999)
      1100
  """
  @spec next_delay(pos_integer(), float()) :: pos_integer()
  def next_delay(poll_interval, u \\ :rand.uniform())
      when is_integer(poll_interval) and poll_interval > 0 and is_float(u) and u >= 0 and u < 1,
      do: max(1, round(poll_interval * (0.9 + 0.2 * u)))

  # A doubted UDP answer's new peers, dialed at once (Act.dial/2); ports kept, none forgotten.
  # Only peers whose addresses came with them: the others would each cost a DNS query.
  defp early_dial(%Config{list_nodes: {m, f, a}} = config, query, peers) do
    peers = Enum.filter(peers, &match?({_, _, [_ | _]}, &1))
    {answer, addresses} = split_addresses({query, {:ok, peers}})
    hand_off(addresses, with({t, list, _} <- ports([answer], config), do: {t, list, false}))
    %{new: new} = [answer] |> names(config) |> diff(apply(m, f, a))
    Caravan.Cluster.Act.dial(config, new)
  end

  # Asks every query at once: [{{query, {:ok, peers} | {:error, reason}},
  # [{host, ips}]}], the addresses apart from the peers.
  defp lookup_all(%Config{queries: queries} = config, early_dial?) do
    queries
    |> Task.async_stream(&lookup(config, &1, early_dial?),
      max_concurrency: length(queries),
      # The client bounds itself; this only catches one that does not.
      timeout: config.timeout + 2_000,
      on_timeout: :kill_task
    )
    |> Enum.zip(queries)
    |> Enum.map(fn
      {{:ok, answer}, query} -> {query, answer}
      {{:exit, reason}, query} -> {query, {:error, {:dns_client_exit, inspect(reason)}}}
    end)
    |> Enum.map(&split_addresses/1)
  end

  defp split_addresses({query, {:ok, peers}}) do
    {peers, addresses} =
      Enum.map_reduce(peers, [], fn
        {port, host, [_ | _] = ips}, acc when is_binary(host) ->
          {{port, host}, [{host, ips} | acc]}

        {port, host, _ips}, acc ->
          {{port, host}, acc}

        peer, acc ->
          {peer, acc}
      end)

    {{query, {:ok, peers}}, addresses}
  end

  defp split_addresses(error), do: {error, []}

  defp lookup(config, query, early_dial?) do
    started = System.monotonic_time()
    answer = get_nodes(config, query, early_dial?)

    {result, reason, count} =
      case answer do
        {:ok, peers} -> {:ok, nil, length(peers)}
        {:error, reason} -> {:error, reason, 0}
      end

    Caravan.Telemetry.execute(
      [:caravan, :lookup],
      %{duration: System.monotonic_time() - started, records: count},
      %{topology: config.topology, query: query, result: result, reason: reason}
    )

    answer
  end

  # record_type :a, :aaaa, :ip: Caravan's own address lookups.
  defp get_nodes(%Config{record_type: type} = config, query, _early_dial?) when type != :srv,
    do:
      AddressRecords.get_nodes(query,
        record_type: type,
        nameservers: config.nameservers,
        timeout: config.timeout
      )

  defp get_nodes(%Config{dns_client: client} = config, query, early_dial?) do
    base = [nameservers: config.nameservers, timeout: config.timeout, node_host: config.node_host]
    early = if early_dial?, do: [early: &early_dial(config, query, &1)], else: []
    opts = [addresses: true] ++ early

    result =
      if function_exported?(client, :get_nodes, 2),
        do: client.get_nodes(query, opts ++ base),
        else: client.get_nodes(query)

    case result do
      {:ok, peers} when is_list(peers) -> {:ok, peers}
      {:error, _} = error -> error
      peers when is_list(peers) -> {:ok, peers}
      other -> {:error, {:bad_dns_client_result, inspect(other)}}
    end
  rescue
    e -> {:error, {:dns_client_raised, Exception.message(e)}}
  end

  # Valid node names as strings (no atoms yet), unique and sorted, and the
  # messages for the records that cannot make one.
  defp node_names(peers, config) do
    {names, invalid} =
      Enum.reduce(peers, {[], []}, fn peer, {names, invalid} ->
        case node_name(peer, config) do
          {:ok, name} -> {[name | names], invalid}
          {:error, {_kind, message}} -> {names, [message | invalid]}
        end
      end)

    {names |> Enum.uniq() |> Enum.sort(), Enum.reverse(invalid)}
  end

  defp node_name({:invalid, message}, _config) when is_binary(message),
    do: {:error, {:invalid_record, message}}

  defp node_name({:address, ip}, config), do: AddressRecords.node_name(config.node_basename, ip)

  defp node_name({port, host}, %Config{node_port: :srv} = config)
       when is_binary(host) or is_list(host),
       do: NodeName.build_srv(config.node_sname, port, to_string(host))

  defp node_name({port, host}, config) when is_binary(host) or is_list(host),
    do: NodeName.build(config.node_sname, port, to_string(host))

  defp node_name(other, _config),
    do: {:error, {:invalid_record, "expected {port, host}, got: #{inspect(other)}"}}
end
