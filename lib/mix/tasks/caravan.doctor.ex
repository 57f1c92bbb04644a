defmodule Mix.Tasks.Caravan.Doctor do
  @shortdoc "Prints Caravan.diagnose/1's report: why the cluster forms or not"
  @moduledoc """
  Prints the report of `Caravan.diagnose/1` for the project's Caravan
  topologies (`config :libcluster, :topologies`), in development, from
  outside the cluster (`outside: true`: the Mix VM is not a member, so
  only DNS, host lookups and TCP are judged, not connections). In a
  release, run `bin/app rpc 'Caravan.diagnose()'` instead (no Mix there).

      $ mix caravan.doctor
      $ mix caravan.doctor --query _app._tcp.service.consul --node-sname app --nameserver 127.0.0.1:8600

  Options (a topology given on the command line instead of the config):

    * `--query QUERY` - the SRV name; with it, `--node-sname NAME` is required.
    * `--nameserver IP[:PORT]` - repeatable.
    * `--tcp-timeout MS` - bound on each TCP probe. Default 1000.

  Peers' host names resolve as on the nodes when this shell has the nodes'
  `CARAVAN_NAMESERVERS` (`CARAVAN_NAMESERVERS=127.0.0.1:8600 mix
  caravan.doctor`); without it, the topology's nameservers (`--nameserver`,
  or the configured topologies') stand in, and the report says so, so the
  doctor does not report as the nodes' a problem only its own shell has.
  The report leaves out this VM (not a member of the cluster) and whether
  peers are connected to it.

  Exits with status 1 when the report finds a problem.
  """
  use Mix.Task

  @switches [query: :keep, node_sname: :string, nameserver: :keep, tcp_timeout: :integer]

  @impl Mix.Task
  def run(args) do
    {opts, rest, invalid} = OptionParser.parse(args, strict: @switches)
    if rest != [] or invalid != [], do: Mix.raise("usage: mix caravan.doctor " <> usage())
    Mix.Task.run("app.config")

    # The Mix VM's epmd module did not run: read CARAVAN_NAMESERVERS (the
    # nameservers the nodes resolve peers' hosts with) here.
    configure_hosts()
    stand_in(opts)

    diagnose_opts =
      case Keyword.get_values(opts, :query) do
        [] ->
          []

        queries ->
          sname = opts[:node_sname] || Mix.raise("--query needs --node-sname")

          config = [
            query: queries,
            node_sname: sname,
            nameservers: Keyword.get_values(opts, :nameserver)
          ]

          [topologies: [config]]
      end

    report =
      Caravan.diagnose(
        diagnose_opts ++ [tcp_timeout: opts[:tcp_timeout] || 1_000, outside: true, print: false]
      )

    IO.write(report)
    unless report =~ "Verdict: no problems found.", do: exit({:shutdown, 1})
    :ok
  end

  defp configure_hosts do
    case Caravan.Epmd.HostResolver.configure() do
      :ok -> :ok
      {:error, {_kind, message}} -> Mix.raise(message)
    end
  end

  # This shell's environment is not the nodes': without CARAVAN_NAMESERVERS
  # here, the topology's nameservers resolve peers' hosts.
  defp stand_in(opts) do
    with {nil, []} <- Caravan.Epmd.HostResolver.nameservers(),
         [_ | _] = nameservers <- topology_nameservers(opts) do
      System.put_env("CARAVAN_NAMESERVERS", Enum.join(nameservers, ","))
      configure_hosts()

      Mix.shell().info(
        "(this shell has no CARAVAN_NAMESERVERS: peers' host names are looked up with " <>
          "the topology's nameservers, #{Enum.join(nameservers, ", ")}, as stand-ins for the nodes')"
      )
    end
  end

  defp topology_nameservers(opts) do
    given =
      case Keyword.get_values(opts, :nameserver) do
        [] ->
          for {_name, t} <- Application.get_env(:libcluster, :topologies, []),
              Keyword.keyword?(t) and t[:strategy] == Caravan.Cluster.DnsStrategy,
              config = Keyword.get(t, :config, []),
              Keyword.keyword?(config),
              ns <- List.wrap(Keyword.get(config, :nameservers, [])),
              do: ns

        flags ->
          flags
      end

    case Caravan.DNS.Options.nameservers(given) do
      {:ok, list} -> Enum.uniq(list)
      {:error, _} -> []
    end
  end

  defp usage,
    do: "[--query QUERY --node-sname NAME] [--nameserver IP[:PORT]]... [--tcp-timeout MS]"
end
