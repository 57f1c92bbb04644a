defmodule Caravan.Cluster.Messages do
  @moduledoc false
  # One job: the texts of the strategy's warnings that explain a setup
  # mistake (at start, on a failed connect, on a silent DNS), each naming
  # the cause and the fix. The strategy decides when to say them.

  import Caravan.Cluster.Log, only: [log: 3]

  alias Caravan.Cluster.{Config, Silence}
  alias Caravan.Diagnose.Probe

  # Once, when a topology starts: a node without -name/-sname cannot
  # connect to anything it finds (dns_cluster and libcluster warn too), and
  # peers dial "<node_sname>-<port>@<host>", which must be this node's name.
  @spec warn_at_start(Config.t()) :: :ok
  def warn_at_start(config) do
    unless Node.alive?() do
      warn(
        config,
        "this node is not distributed (started without -name or -sname), so it will look " <>
          "up peers but cannot connect to them; start it with -name <name>@<host> (or " <>
          "-sname) and Caravan's epmd module"
      )
    end

    case Probe.name_mismatch(node(), config.node_sname) do
      nil -> :ok
      problem -> warn(config, problem)
    end
  end

  # The start of what a failed connect returned, for the explanation
  # Caravan.Diagnose.Probe.why/1 completes.
  @spec failure(term()) :: String.t()
  def failure(false), do: ""
  def failure(:timeout), do: "no answer within connect_timeout; "
  def failure(other), do: "#{inspect(other)}; "

  # A streak of polls that found no instances (:no_instances) or only this
  # node (:only_self), naming the queries and the nameservers asked.
  @spec silence(:no_instances | :only_self, Config.t()) :: String.t()
  def silence(kind, config) do
    nameservers =
      if config.nameservers == [],
        do: "the system's resolv.conf",
        else: Enum.join(config.nameservers, ", ")

    asked = "#{Enum.map_join(config.queries, ", ", &inspect/1)} (nameservers: #{nameservers})"

    case kind do
      :no_instances ->
        "DNS has listed no instances for #{Silence.polls()} polls: #{asked} answers " <>
          "NXDOMAIN/NODATA or no records; this node runs alone. Check the query " <>
          "(e.g. _app._tcp.service.consul) and that the service is registered and healthy " <>
          "(Caravan.diagnose() tells more)"

      :only_self ->
        "DNS has listed only this node (#{node()}) for #{Silence.polls()} polls: #{asked}; " <>
          "the other instances are not registered or not healthy in DNS"
    end
  end

  defp warn(config, message),
    do: log(:warning, config, "#{message}")
end
