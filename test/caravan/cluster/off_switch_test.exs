defmodule Caravan.Cluster.OffSwitchTest do
  # `query: :ignore` turns discovery off (dev and test), as dns_cluster's
  # does: no process, no lookup, and a supervisor that starts it is fine.
  use ExUnit.Case, async: true

  @moduletag :capture_log

  alias Caravan.Cluster.DnsStrategy

  test "query: :ignore starts nothing, as a child or under libcluster" do
    assert DnsStrategy.start_link(query: :ignore, node_sname: "app") == :ignore
    assert DnsStrategy.start_link([%{topology: :t, config: [query: :ignore]}]) == :ignore

    {:ok, sup} = Supervisor.start_link([{DnsStrategy, query: :ignore}], strategy: :one_for_one)
    assert [{DnsStrategy, :undefined, :worker, _}] = Supervisor.which_children(sup)
    Supervisor.stop(sup)
  end

  test "any other query still starts the strategy, or is refused" do
    # init/1's {:stop, _} also exits the linked caller (OTP 26+).
    Process.flag(:trap_exit, true)
    assert {:error, {:invalid_config, _}} = DnsStrategy.start_link(query: :other, node_sname: "a")
  end
end
