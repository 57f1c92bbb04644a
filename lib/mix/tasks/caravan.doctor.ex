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

  Peers' host names resolve as on the nodes: set `CARAVAN_NAMESERVERS`
  as the nodes have it (`CARAVAN_NAMESERVERS=127.0.0.1:8600 mix caravan.doctor`).

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
    case Caravan.Epmd.HostResolver.configure() do
      :ok -> :ok
      {:error, message} -> Mix.raise(message)
    end

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

  defp usage,
    do: "[--query QUERY --node-sname NAME] [--nameserver IP[:PORT]]... [--tcp-timeout MS]"
end
