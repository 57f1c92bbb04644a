defmodule Caravan.PublicApiTest do
  # The documented surface (what Code.fetch_docs lists as documented, as
  # ex_doc would show it) is the short list a user needs: the port rule,
  # the epmd and proto_dist modules, the strategy, the SRV lookup, the
  # DnsClient behaviour and its client, the Mix tasks. Everything else is
  # @moduledoc false / @doc false. A new public function must be added here
  # on purpose.
  use ExUnit.Case, async: true

  @expected %{
    Caravan => ~w(function:diagnose/1 type:error/0 type:error_kind/0),
    Caravan.Cluster.DnsStrategy => ~w(function:child_spec/1 function:start_link/1),
    Caravan.DNS =>
      ~w(function:default_nameservers/0 function:lookup_srv/2 function:vm_nameservers/0 type:reason/0
         type:srv_record/0),
    Caravan.DnsClient => ~w(callback:get_nodes/1 callback:get_nodes/2 type:peer/0 type:result/0),
    Caravan.DnsClient.InetRes => ~w(function:get_nodes/1 function:get_nodes/2),
    Caravan.DnsClient.Native => ~w(function:get_nodes/1 function:get_nodes/2),
    Caravan.Epmd =>
      ~w(function:dist_port/1 function:fetch_dist_port/1 function:listen_port/1 function:node_name/3 type:error/0 type:node_name/0),
    Caravan.Epmd.Client =>
      ~w(function:address_please/3 function:listen_port_please/2 function:names/1 function:port_please/2 function:port_please/3 function:register_node/2 function:register_node/3 function:start_link/0),
    Caravan.Epmd.Dist_dist =>
      ~w(function:accept/1 function:accept_connection/5 function:address/0 function:close/1 function:getopts/2 function:is_node_name/1 function:listen/1 function:listen/2 function:select/1 function:setopts/2 function:setup/5),
    # The events are documented; execute/3 is not.
    Caravan.Telemetry => [],
    Mix.Tasks.Caravan.Doctor => [],
    Mix.Tasks.Caravan.Lookup => [],
    Mix.Tasks.Caravan.Port => [],
    Mix.Tasks.Caravan.Precompile => [],
    Mix.Tasks.Compile.CaravanNative => []
  }

  test "the documented modules and functions are exactly the public API" do
    {:ok, modules} = :application.get_key(:caravan, :modules)

    documented =
      for module <- modules,
          not String.starts_with?(inspect(module), "Caravan.Test."),
          {:docs_v1, _, _, _, moduledoc, _, docs} = Code.fetch_docs(module),
          moduledoc not in [:hidden, :none],
          into: %{} do
        entries =
          for {{kind, name, arity}, _, _, doc, _} <- docs,
              kind in [:function, :macro, :callback, :type],
              doc != :hidden,
              do: "#{kind}:#{name}/#{arity}"

        {module, Enum.sort(entries)}
      end

    assert documented == Map.new(@expected, fn {m, entries} -> {m, Enum.sort(entries)} end)
  end
end
