defmodule Caravan.Diagnose.NodeSection do
  @moduledoc false
  # The report's sections about this node (Caravan.Diagnose): its name,
  # distribution, creation, epmd module and flags, its connections, and the
  # nameservers its epmd module resolves peer hosts with. Only whitelisted
  # flags are printed: never the cookie, never a TLS option file's content.

  alias Caravan.Epmd.Probe

  @doc """
  The "This node" section: `{lines, problems}`, both lists of strings.
  Lines name the node, its distribution (port, interface, proto_dist), its
  creation, the epmd module, Caravan's flags in force and the connected
  nodes; problems say what to change (in rel/vm.args.eex, rel/env.sh.eex).
  """
  @spec this_node() :: {[String.t()], [String.t()]}
  def this_node do
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
          {:ok, [{name, port}]} -> "port #{port}#{listen_source(name)}"
          _ -> "port unknown (not registered through Caravan)"
        end

      "listening on #{port}, #{address}, proto_dist #{proto_dist()}"
    else
      "not started"
    end
  end

  defp listen_source(name) do
    case Caravan.Epmd.Ports.listen_port(name) do
      {:ok, _port, source} when is_binary(source) -> " (from #{source})"
      _ -> ""
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
    :caravan_dns_timeout,
    :caravan_srv_query,
    :erl_epmd_port
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

  @doc """
  The "Host names of node names (epmd module)" section: `{lines,
  problems}`: the nameservers the epmd module resolves peer hosts with,
  where they came from, and a problem when a nameserver flag is set but
  was not read.
  """
  @spec nameservers() :: {[String.t()], [String.t()]}
  def nameservers do
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
end
