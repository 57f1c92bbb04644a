defmodule Caravan.Diagnose.TopologySection do
  @moduledoc false
  # Renders one topology's section of the report (Caravan.Diagnose) from
  # what its checks found: the config, the strategy's last poll, a lookup
  # of each query now and a probe of every node DNS lists; and the problems
  # they show, each with the next step. Runs no check itself.

  alias Caravan.Cluster.Warnings
  alias Caravan.Epmd.Probe

  @doc """
  The section of a topology config the strategy refuses: `{lines,
  problems}`; `source` says where the config came from, `message` is the
  config error.
  """
  @spec invalid(String.t(), String.t()) :: {[String.t()], [String.t()]}
  def invalid(source, message) do
    {["Topology (#{source}): INVALID CONFIG: #{message}", ""],
     ["a topology config is invalid (the strategy refuses to start with it): #{message}"]}
  end

  @doc """
  A topology's section: `{lines, problems}`, both lists of strings.
  `source` says where the config came from; `found` is what the checks
  found: `:at` (`System.monotonic_time/0` when they started, the last
  poll's age is measured to it), `:last_poll` (the strategy's last poll,
  `%{at: monotonic_time, found: [node], errors: [term]}`, or `nil`),
  `:lookups` (`Caravan.Diagnose.Lookup.run/2`'s result for each query),
  `:nodes` (the node names they list), `:probes` (a
  `t:Caravan.Epmd.Probe.t/0` for each node) and `:outside?` (optional,
  true when the report is made from outside the cluster: connections are
  not shown).
  """
  @spec render(String.t(), Caravan.Cluster.Config.t(), %{
          optional(:outside?) => boolean(),
          required(:at) => integer(),
          required(:last_poll) => Caravan.Cluster.DnsStrategy.State.last_poll() | nil,
          required(:lookups) => list(),
          required(:nodes) => [node()],
          required(:probes) => [Probe.t()]
        }) :: {[String.t()], [String.t()]}
  def render(source, config, %{lookups: lookups, nodes: nodes, probes: probes} = found) do
    header = [
      "Topology #{config.topology}: #{source}",
      "  query:          #{Enum.map_join(config.queries, ", ", &inspect/1)}",
      names_line(config),
      # Where the lookups go, and which setting says so.
      "  nameservers:    #{nameservers_text(config.nameservers)}" <>
        if(config.nameservers == [], do: "", else: " (the topology's)")
    ]

    last = last_poll_lines(found.last_poll, found.at)

    lookup_lines =
      Enum.map(lookups, fn
        {query, {:ok, count}, _nodes} ->
          "  lookup now:     #{inspect(query)}: #{count} record(s)"

        {query, {:ok, count, answered}, _nodes} ->
          "  lookup now:     #{inspect(query)}: #{count} record(s) of #{answered} (search list)"

        {query, {:none, text}, _nodes} ->
          "  lookup now:     #{inspect(query)}: no records (#{text})"

        {query, {:error, text}, _nodes} ->
          "  lookup now:     #{inspect(query)}: FAILED: #{text}"
      end)

    node_lines =
      for probe <- probes do
        "    #{probe.node}: #{probe_text(probe, Map.get(found, :outside?, false))}"
      end

    problems =
      name_problem(config) ++
        trimmed_problem(config, found.last_poll) ++
        lookup_problems(config, lookups, nodes) ++
        for(%{problem: p} = probe <- probes, p != nil, do: "#{probe.node}: #{p}")

    lines =
      header ++
        last ++
        lookup_lines ++
        if(node_lines == [],
          do: ["  nodes DNS lists: none"],
          else: ["  nodes DNS lists:" | node_lines]
        ) ++ [""]

    {lines, problems}
  end

  defp names_line(%{record_type: :srv} = config),
    do: "  node_sname:     #{config.node_sname}, node_host: #{config.node_host}"

  defp names_line(config),
    do: "  record_type:    #{config.record_type}, node_basename: #{config.node_basename}"

  defp last_poll_lines(nil, _now), do: []

  defp last_poll_lines(%{at: at} = poll, now) do
    age = System.convert_time_unit(now - at, :native, :millisecond)
    found = Map.get(poll, :found, [])
    errors = Map.get(poll, :errors, [])

    trimmed =
      case Map.get(poll, :trimmed) do
        {k, n} -> ", answers hold #{k} of at least #{n} instances seen (trimmed)"
        nil -> ""
      end

    [
      "  last poll:      #{age} ms ago: #{length(found)} node(s)" <>
        trimmed <>
        if(errors == [],
          do: "",
          else: ", errors: " <> Enum.map_join(errors, "; ", &inspect/1)
        )
    ]
  end

  # The strategy's warning about answers a forwarder trims, as a problem.
  defp trimmed_problem(config, %{trimmed: {_, _} = trimmed}),
    do: ["topology #{config.topology}: " <> elem(Warnings.text({:trimmed, trimmed}, config), 1)]

  defp trimmed_problem(_config, _last_poll), do: []

  defp nameservers_text(parsed), do: Caravan.DNS.asked_text(parsed)

  defp probe_text(%{self?: true}, _outside?), do: "this node"

  defp probe_text(probe, outside?) do
    resolve =
      case probe.resolve do
        {:ok, ip} -> "resolves to #{:inet.ntoa(ip)}"
        {:error, reason} -> "does not resolve (#{inspect(reason)})"
        :skipped -> "not resolved"
      end

    tcp =
      case probe.tcp do
        :open -> "port #{probe.port} accepts TCP"
        {:error, reason} -> "port #{probe.port}: #{inspect(reason)}"
        :skipped -> nil
      end

    connected =
      cond do
        outside? -> nil
        probe.connected? -> "connected"
        true -> "NOT connected"
      end

    Enum.join(Enum.reject([resolve, tcp, connected], &is_nil/1), ", ") <>
      source_text(probe.port_source)
  end

  defp source_text(:name), do: " (port from the node name)"
  defp source_text({:srv, :poll, topology}), do: " (port from SRV, last poll of #{topology})"
  defp source_text({:srv, :lookup, query}), do: " (port from SRV, lookup of #{query} now)"
  defp source_text(nil), do: ""

  defp name_problem(config) do
    case Probe.name_mismatch(node(), config.node_sname, config.node_port) do
      nil -> []
      problem -> ["topology #{config.topology}: #{problem}"]
    end
  end

  defp lookup_problems(config, lookups, nodes) do
    errors =
      for {query, {:error, text}, _} <- lookups do
        "topology #{config.topology}: lookup of #{inspect(query)} failed (#{text}), asking " <>
          "#{nameservers_text(config.nameservers)}: check :nameservers and that the " <>
          "service is registered"
      end

    cond do
      errors != [] ->
        errors

      nodes == [] ->
        [
          "topology #{config.topology}: DNS lists no instances for " <>
            "#{Enum.map_join(config.queries, ", ", &inspect/1)} (asking " <>
            "#{nameservers_text(config.nameservers)}): check the query (e.g. " <>
            "_app._tcp.service.consul) and that the service is registered and healthy"
        ]

      nodes == [node()] ->
        [
          "topology #{config.topology}: DNS lists only this node: the other instances " <>
            "are not registered (or not healthy) in DNS yet"
        ]

      Node.alive?() and node() not in nodes ->
        [
          "topology #{config.topology}: DNS does not list this node (#{node()}): its " <>
            "name does not match any record (check :node_sname, -name/RELEASE_NODE and " <>
            "the service registration)"
        ]

      true ->
        []
    end
  end
end
