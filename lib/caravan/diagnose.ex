defmodule Caravan.Diagnose do
  @moduledoc false
  # Builds the plain-text report of `Caravan.diagnose/1`. Sections: this
  # node, each topology (last poll, a lookup now, a probe of every node DNS
  # lists), then the problems found with the next step for each. Only
  # whitelisted flags are printed: never the cookie, never a TLS option
  # file's content.

  alias Caravan.Cluster.Config
  alias Caravan.Diagnose.Probe

  @probe_bound 5_000

  @doc """
  The report as a string. Options: `:topologies` (a list of topology
  configs, keyword lists as `Caravan.Cluster.DnsStrategy` takes; default:
  the strategies running on this node, else the Caravan topologies in
  `config :libcluster, :topologies`), `:tcp_timeout` (ms per TCP probe,
  default 1000), `:outside` (default false; true when run from outside
  the cluster, as `mix caravan.doctor` is: this node's own distribution
  and connections are not judged).
  """
  @spec report(keyword()) :: String.t()
  def report(opts \\ []) do
    outside? = Keyword.get(opts, :outside, false)
    {node_lines, node_problems} = this_node()
    node_problems = if outside?, do: [], else: node_problems
    {ns_lines, ns_problems} = nameserver_section()

    {topology_lines, topology_problems} =
      opts
      |> topologies()
      |> Enum.map(&topology(&1, opts))
      |> Enum.unzip()

    problems = node_problems ++ ns_problems ++ List.flatten(topology_problems)

    [
      "Caravan diagnosis of #{node()} at #{DateTime.utc_now() |> DateTime.truncate(:second)}",
      "",
      "This node",
      node_lines,
      "",
      "Host names of node names (epmd module)",
      ns_lines,
      "",
      List.flatten(topology_lines),
      verdict(problems)
    ]
    |> List.flatten()
    |> Enum.join("\n")
    |> Kernel.<>("\n")
  end

  # -- This node --------------------------------------------------------------

  defp this_node do
    epmd = :net_kernel.epmd_module()
    no_epmd? = match?({:ok, _}, :init.get_argument(:no_epmd))
    registered = Caravan.Epmd.Client.names()

    lines = [
      "  node name:      #{node()}",
      "  distribution:   #{distribution()}",
      "  creation:       #{:erlang.system_info(:creation)}",
      "  epmd module:    #{inspect(epmd)}",
      "  flags in force: #{flags()}",
      "  connected:      #{connected()}"
    ]

    # Named, so the `and`/`&&` mix below formats the same on every Elixir.
    other_epmd? = Node.alive?() and epmd != Caravan.Epmd.Client

    nothing_registered? =
      Node.alive?() and epmd == Caravan.Epmd.Client and registered == {:ok, []}

    problems =
      Enum.reject(
        [
          not Node.alive?() &&
            "this node is not distributed (#{node()}): in a release set " <>
              "RELEASE_DISTRIBUTION=name and RELEASE_NODE=app-4370@<host> in rel/env.sh.eex",
          other_epmd? &&
            "the epmd module is #{inspect(epmd)}, not Caravan's: add " <>
              "\"-start_epmd false -epmd_module Elixir.Caravan.Epmd.Client\" to " <>
              "rel/vm.args.eex and rel/remote.vm.args.eex",
          no_epmd? &&
            "-no_epmd is set: OTP then never starts the epmd module, so " <>
              "-caravan_nameservers is not read; use -start_epmd false instead",
          nothing_registered? &&
            "the epmd module registered no name: distribution did not start through it"
        ],
        &(&1 in [false, nil])
      )

    {lines, problems}
  end

  defp distribution do
    if Node.alive?() do
      address =
        case :application.get_env(:kernel, :inet_dist_use_interface) do
          {:ok, ip} -> "#{:inet.ntoa(ip)} (-kernel inet_dist_use_interface)"
          :undefined -> "every address (no -kernel inet_dist_use_interface)"
        end

      port =
        case Caravan.Epmd.Client.names() do
          {:ok, [{_name, port}]} -> "port #{port}"
          _ -> "port unknown (not registered through Caravan)"
        end

      "listening on #{port}, #{address}, proto_dist #{proto_dist()}"
    else
      "not started"
    end
  end

  defp proto_dist do
    case :init.get_argument(:proto_dist) do
      {:ok, protos} -> protos |> Enum.concat() |> Enum.map_join(" ", &to_string/1)
      :error -> "inet_tcp"
    end
  end

  # Only flags Caravan cares about; never -setcookie or option files' content.
  @flags [
    :start_epmd,
    :no_epmd,
    :epmd_module,
    :proto_dist,
    :dist_listen,
    :hidden,
    :connect_all,
    :caravan_nameservers,
    :caravan_dns_timeout
  ]
  defp flags do
    shown =
      for flag <- @flags, {:ok, values} <- [:init.get_argument(flag)] do
        "-#{flag} #{values |> Enum.concat() |> Enum.map_join(" ", &to_string/1)}"
        |> String.trim_trailing()
      end

    case shown do
      [] -> "(none of Caravan's flags)"
      shown -> Enum.join(shown, " ")
    end
  end

  defp connected do
    case Node.list([:visible, :hidden]) do
      [] -> "no nodes"
      nodes -> "#{length(nodes)}: #{nodes |> Enum.sort() |> Enum.join(", ")}"
    end
  end

  defp nameserver_section do
    {_, timeout} = Caravan.Epmd.HostResolver.config()

    case Probe.nameservers() do
      {[], nil} ->
        {[
           "  nameservers:    none configured: hosts resolve through the OS resolver " <>
             "(/etc/resolv.conf, /etc/hosts)"
         ], []}

      {[], source} ->
        {["  nameservers:    none in use, though #{source} is set"],
         [
           "#{source} is set but the epmd module did not read it (is -no_epmd set, or " <>
             "-epmd_module missing?): .consul host names will not resolve"
         ]}

      {list, source} ->
        {[
           "  nameservers:    #{Enum.join(list, ", ")} (from #{source || "boot config"}), " <>
             "timeout #{timeout} ms"
         ], []}
    end
  end

  # -- Topologies ---------------------------------------------------------------

  # [{source, config, last_poll | nil}]
  defp topologies(opts) do
    case Keyword.fetch(opts, :topologies) do
      {:ok, configs} ->
        Enum.map(configs, &checked("given", &1))

      :error ->
        case running() do
          [] -> configured()
          running -> running
        end
    end
  end

  # The strategies running on this node, and the state each keeps.
  defp running do
    for pid <- Process.list(),
        {:dictionary, dict} <- [Process.info(pid, :dictionary)],
        dict[:"$initial_call"] == {Caravan.Cluster.DnsStrategy, :init, 1},
        state = safe_state(pid),
        is_map(state) and is_map_key(state, :config) do
      {"running (#{inspect(pid)})", state.config, Map.get(state, :last_poll)}
    end
  end

  defp safe_state(pid) do
    :sys.get_state(pid, 1_000)
  catch
    :exit, _ -> nil
  end

  defp configured do
    for {name, topology} <- Application.get_env(:libcluster, :topologies, []),
        topology[:strategy] == Caravan.Cluster.DnsStrategy do
      checked(
        "config :libcluster (not running)",
        [topology: name] ++ Keyword.get(topology, :config, [])
      )
    end
  end

  # A topology config as given: {source, config, nil}, or {:invalid,
  # source, message} when the strategy would refuse it.
  defp checked(source, config) do
    case Config.new(config) do
      {:ok, config} -> {source, config, nil}
      {:error, {_kind, message}} -> {:invalid, source, message}
    end
  end

  defp topology({:invalid, source, message}, _opts) do
    {["Topology (#{source}): INVALID CONFIG: #{message}", ""],
     ["a topology config is invalid (the strategy refuses to start with it): #{message}"]}
  end

  defp topology({source, config, last_poll}, opts) do
    header = [
      "Topology #{config.topology}: #{source}",
      "  query:          #{Enum.map_join(config.queries, ", ", &inspect/1)}",
      names_line(config),
      "  nameservers:    #{nameservers_text(config.nameservers)}"
    ]

    last = last_poll_lines(last_poll)
    lookups = Enum.map(config.queries, &lookup(config, &1))
    nodes = lookups |> Enum.flat_map(fn {_, _, nodes} -> nodes end) |> Enum.uniq() |> Enum.sort()

    lookup_lines =
      Enum.map(lookups, fn
        {query, {:ok, count}, _nodes} ->
          "  lookup now:     #{inspect(query)}: #{count} record(s)"

        {query, {:none, text}, _nodes} ->
          "  lookup now:     #{inspect(query)}: no records (#{text})"

        {query, {:error, text}, _nodes} ->
          "  lookup now:     #{inspect(query)}: FAILED: #{text}"
      end)

    probes = probe_all(nodes, opts)

    node_lines =
      for probe <- probes do
        "    #{probe.node}: #{probe_text(probe)}"
      end

    problems =
      name_problem(config) ++
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

  defp last_poll_lines(nil), do: []

  defp last_poll_lines(%{at: at} = poll) do
    age = System.convert_time_unit(System.monotonic_time() - at, :native, :millisecond)
    found = Map.get(poll, :found, [])
    errors = Map.get(poll, :errors, [])

    [
      "  last poll:      #{age} ms ago: #{length(found)} node(s)" <>
        if(errors == [],
          do: "",
          else: ", errors: " <> Enum.map_join(errors, "; ", &inspect/1)
        )
    ]
  end

  defp nameservers_text([]), do: "the system's resolv.conf"
  defp nameservers_text(list), do: Enum.join(list, ", ")

  # {query, {:ok, count} | {:none, text} | {:error, text}, node names}
  # A/AAAA topologies: the strategy's own poll (Caravan.Cluster.Poll).
  defp lookup(%{record_type: type} = config, query) when type != :srv do
    result = Caravan.Cluster.Poll.run(%{config | queries: [query]})

    case result.errors do
      [{_query, reason} | _] -> {query, {:error, inspect(reason)}, []}
      [] -> {query, {:ok, length(result.found)}, result.found}
    end
  end

  defp lookup(config, query) do
    result =
      if config.dns_client == Caravan.DnsClient.Native do
        case Caravan.DNS.lookup_srv(query,
               nameservers: config.nameservers,
               timeout: config.timeout,
               node_host: config.node_host
             ) do
          {:ok, records} ->
            {:ok, for(%{port: p, host: h} <- records, is_binary(h), do: {p, h})}

          {:error, {kind, message}} when kind in [:nxdomain, :nodata] ->
            {:none, "#{kind}: #{message}"}

          {:error, {kind, message}} ->
            {:error, "#{kind}: #{message}"}
        end
      else
        try do
          case config.dns_client.get_nodes(query) do
            {:ok, peers} when is_list(peers) -> {:ok, peers}
            {:error, reason} -> {:error, inspect(reason)}
            peers when is_list(peers) -> {:ok, peers}
            other -> {:error, "the DNS client returned #{inspect(other)}"}
          end
        catch
          kind, reason -> {:error, Exception.format_banner(kind, reason)}
        end
      end

    case result do
      {:ok, peers} ->
        nodes =
          for {port, host} when is_integer(port) and (is_binary(host) or is_list(host)) <-
                Enum.take(peers, config.max_nodes),
              {:ok, node} <-
                [Caravan.Epmd.node_name(config.node_sname, port, to_string(host))],
              do: node

        {query, {:ok, length(peers)}, nodes}

      {:none, text} ->
        {query, {:none, text}, []}

      {:error, text} ->
        {query, {:error, text}, []}
    end
  end

  defp probe_all(nodes, opts) do
    tcp_timeout = Keyword.get(opts, :tcp_timeout, 1_000)

    nodes
    |> Task.async_stream(
      &Probe.check(&1,
        tcp_timeout: tcp_timeout,
        expect_connected: not Keyword.get(opts, :outside, false)
      ),
      max_concurrency: 32,
      timeout: @probe_bound,
      on_timeout: :kill_task,
      ordered: true
    )
    |> Enum.zip(nodes)
    |> Enum.map(fn
      {{:ok, probe}, _node} ->
        probe

      {{:exit, _reason}, node} ->
        %{
          node: node,
          self?: false,
          connected?: false,
          resolve: :skipped,
          tcp: :skipped,
          problem: "probe did not finish within #{@probe_bound} ms (host lookup hangs?)"
        }
    end)
  end

  defp probe_text(%{self?: true}), do: "this node"

  defp probe_text(probe) do
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

    connected = if probe.connected?, do: "connected", else: "NOT connected"
    [resolve, tcp, connected] |> Enum.reject(&is_nil/1) |> Enum.join(", ")
  end

  defp name_problem(config) do
    case Probe.name_mismatch(node(), config.node_sname) do
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

  defp verdict([]), do: ["Verdict: no problems found."]

  defp verdict(problems) do
    [
      "Verdict: #{length(problems)} problem(s), next steps:"
      | problems |> Enum.with_index(1) |> Enum.map(fn {p, i} -> "  #{i}. #{p}" end)
    ]
  end
end
