defmodule Caravan.Diagnose do
  @moduledoc false
  # The report of `Caravan.diagnose/1`: runs the checks (which topologies
  # to look at, a lookup of each query now, a probe of every node DNS
  # lists) and assembles the plain-text report from its sections: this node
  # and its nameservers (NodeSection), each topology (TopologySection),
  # then the verdict, the problems found with the next step for each.
  # Dependencies run one way: Diagnose asks the running strategies
  # (Caravan.Cluster.DnsStrategy.status/2) and probes nodes
  # (Caravan.Epmd.Probe); neither knows of Diagnose.

  alias Caravan.Cluster.{Config, DnsStrategy}
  alias Caravan.Diagnose.{Lookup, NodeSection, TopologySection}
  alias Caravan.Epmd.Probe

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
    {node_lines, node_problems} = NodeSection.this_node()
    node_problems = if outside?, do: [], else: node_problems
    {ns_lines, ns_problems} = NodeSection.nameservers()

    {topology_lines, topology_problems} =
      opts
      |> topologies()
      |> Enum.map(&topology(&1, opts))
      |> Enum.unzip()

    problems = node_problems ++ ns_problems ++ List.flatten(topology_problems)
    at = DateTime.utc_now() |> DateTime.truncate(:second)

    [
      if(outside?,
        do: ["Caravan diagnosis from outside the cluster at #{at}", ""],
        else: ["Caravan diagnosis of #{node()} at #{at}", "", "This node", node_lines, ""]
      ),
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

  # The strategies running on this node, and what each last found
  # (DnsStrategy.status/2).
  defp running do
    for pid <- Process.list(),
        {:dictionary, dict} <- [Process.info(pid, :dictionary)],
        dict[:"$initial_call"] == {DnsStrategy, :init, 1},
        {:ok, status} <- [DnsStrategy.status(pid)] do
      {"running (#{inspect(pid)})", status.config, status.last_poll}
    end
  end

  defp configured do
    for {name, topology} <- Application.get_env(:libcluster, :topologies, []),
        topology[:strategy] == DnsStrategy do
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

  defp topology({:invalid, source, message}, _opts),
    do: TopologySection.invalid(source, message)

  defp topology({source, config, last_poll}, opts) do
    # The last poll's age is taken before the lookups and probes run.
    at = System.monotonic_time()
    lookups = Enum.map(config.queries, &Lookup.run(config, &1))
    nodes = lookups |> Enum.flat_map(fn {_, _, nodes} -> nodes end) |> Enum.uniq() |> Enum.sort()
    probes = probe_all(nodes, opts)

    TopologySection.render(source, config, %{
      at: at,
      last_poll: last_poll,
      lookups: lookups,
      nodes: nodes,
      probes: probes,
      outside?: Keyword.get(opts, :outside, false)
    })
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

  defp verdict([]), do: ["Verdict: no problems found."]

  defp verdict(problems) do
    [
      "Verdict: #{length(problems)} problem(s), next steps:"
      | problems |> Enum.with_index(1) |> Enum.map(fn {p, i} -> "  #{i}. #{p}" end)
    ]
  end
end
