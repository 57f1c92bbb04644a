defmodule Caravan.Cluster.Leave do
  @moduledoc false
  # One job: the side effects of keeping a departed node out (the decisions
  # are Caravan.Cluster.Membership's): asking a node to leave, leaving,
  # the forced disconnect of a node that does not leave, the name leave
  # requests are sent to, and the OTP settings a prune depends on. The log
  # lines of these steps are written here, beside the OTP checks they
  # report; every other operator text is Caravan.Cluster.Warnings'.
  #
  # Why leaving and not disconnecting: with OTP 25's defaults (connect_all
  # and prevent_overlapping_partitions true), a node that loses a connection
  # tells every other node, and global there drops the healthy peers still
  # connected to it. global:disconnect/0 (OTP 25.1+), run on the departed
  # node itself, drops its links without that report.

  require Logger

  import Caravan.Cluster.Warnings, only: [log: 3]

  alias Caravan.Cluster.{Config, Libcluster}

  # The name the strategy of `topology` registers on each node:
  # :"Elixir.Caravan.Cluster.DnsStrategy.<topology>". Members send leave
  # requests to it, so every node of a cluster must use the same topology
  # name, as one libcluster config does.
  @spec registered_name(atom()) :: atom()
  def registered_name(topology) when is_atom(topology),
    do: :"Elixir.Caravan.Cluster.DnsStrategy.#{topology}"

  # Registers the calling process under registered_name/1; warns (and
  # returns false) when another strategy of the same topology has it.
  @spec register(Config.t()) :: boolean()
  def register(config) do
    Process.register(self(), registered_name(config.topology))
    true
  rescue
    ArgumentError ->
      log(
        :warning,
        config,
        "#{inspect(registered_name(config.topology))} is " <>
          "already registered (two strategies with one topology name?); this one will not " <>
          "hear leave requests"
      )

      false
  end

  # Asks `node`'s strategy (same topology) to leave: it then runs
  # global:disconnect/0. Never sets up a connection (noconnect).
  @spec ask(Config.t(), node()) :: :ok
  def ask(%Config{topology: topology}, node) do
    _ =
      :erlang.send({registered_name(topology), node}, {:caravan_leave, topology, node()}, [
        :noconnect
      ])

    Logger.info(
      "[caravan] topology #{topology}: asked #{node} to leave: DNS no longer lists it (prune: true)"
    )

    Caravan.Telemetry.execute(
      [:caravan, :disconnect],
      %{system_time: System.system_time()},
      %{topology: topology, node: node, reason: :asked_to_leave}
    )
  end

  # This node leaves every node global knows, so that no other node sees a
  # lost connection it must act on (global:disconnect/0, OTP 25.1+; on an
  # older OTP, a disconnect from each node).
  @spec leave() :: :ok
  def leave do
    _ =
      cond do
        not Node.alive?() -> :ok
        function_exported?(:global, :disconnect, 0) -> spawn(fn -> :global.disconnect() end)
        true -> for node <- Node.list(), do: :erlang.disconnect_node(node)
      end

    :ok
  end

  # A node that did not leave when asked (no Caravan 2 or OTP < 25.1
  # there): disconnected from here through the :disconnect MFA (libcluster's
  # disconnect_nodes/4 when libcluster is loaded), with a warning.
  @spec disconnect(Config.t(), node()) :: :ok
  def disconnect(%Config{disconnect: {m, f, a}} = config, node) do
    result =
      try do
        if config.libcluster,
          do: Libcluster.disconnect(config.topology, config.disconnect, config.list_nodes, node),
          else: apply(m, f, a ++ [node])
      catch
        kind, reason -> {:raised, Exception.format_banner(kind, reason)}
      end

    Caravan.Telemetry.execute(
      [:caravan, :disconnect],
      %{system_time: System.system_time()},
      %{topology: config.topology, node: node, reason: :pruned}
    )

    log(
      :warning,
      config,
      "#{node}, which DNS no longer lists, did not " <>
        "leave when asked #{config.leave_after} times (prune: true); disconnected it " <>
        "(#{inspect(result)})" <>
        if(overlapping_partitions?(),
          do:
            ". With connect_all and prevent_overlapping_partitions on, OTP's global may " <>
              "disconnect healthy peers as well",
          else: ""
        )
    )
  end

  # At start, with prune: true: warns about settings with which a prune
  # cannot remove only the departed node.
  @spec warn_otp_settings(Config.t()) :: :ok
  def warn_otp_settings(%Config{prune: true} = config) do
    unless function_exported?(:global, :disconnect, 0) do
      log(
        :warning,
        config,
        "prune: true on OTP " <>
          "#{:erlang.system_info(:otp_release)} without global:disconnect/0 (OTP 25.1+): " <>
          "this node cannot leave by itself; members disconnect it after " <>
          "#{config.leave_after} polls" <>
          if(overlapping_partitions?(),
            do:
              ", and with connect_all and prevent_overlapping_partitions on, OTP's global " <>
                "then disconnects healthy peers too. Upgrade OTP, or start nodes with " <>
                "-kernel prevent_overlapping_partitions false",
            else: ""
          )
      )
    end

    :ok
  end

  def warn_otp_settings(_config), do: :ok

  # OTP's global drops healthy peers on a disconnect (OTP 25's defaults).
  defp overlapping_partitions? do
    :application.get_env(:kernel, :prevent_overlapping_partitions, true) == true and
      connect_all?()
  end

  defp connect_all? do
    case :application.get_env(:kernel, :connect_all) do
      {:ok, value} -> value == true
      :undefined -> :init.get_argument(:connect_all) != {:ok, [[~c"false"]]}
    end
  end
end
