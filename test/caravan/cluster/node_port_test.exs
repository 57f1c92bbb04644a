defmodule Caravan.Cluster.NodePortTest do
  # The node_port option on its own: checked with the other keys
  # (Caravan.Cluster.Config), nodes named "<node_sname>@<host>" by the poll
  # (Caravan.Cluster.Poll) and by Caravan.Epmd.NodeName. The epmd side
  # is Caravan.Epmd.PortsTest; real nodes are in
  # test/integration/dynamic_ports_test.exs.
  use ExUnit.Case, async: true

  alias Caravan.Cluster.{Config, Poll}

  defp new(opts), do: Config.new([query: "_app._tcp.service.consul", node_sname: "app"] ++ opts)

  test ":name by default; :srv accepted; anything else refused naming the key" do
    assert {:ok, %Config{node_port: :name}} = new([])
    assert {:ok, %Config{node_port: :srv}} = new(node_port: :srv)

    assert {:error, {:invalid_option, "invalid :node_port: :dynamic; expected :name or :srv"}} =
             new(node_port: :dynamic)
  end

  test ":srv refuses a node_sname ending in a digit, and address records" do
    assert {:error, {:invalid_option, message}} =
             Config.new(query: "q", node_sname: "app2", node_port: :srv)

    assert message =~ ~s(invalid :node_sname: "app2" with node_port: :srv)

    assert {:error, {:invalid_option, message}} =
             Config.new(query: "q", record_type: :a, node_basename: "app", node_port: :srv)

    assert message =~ "applies to SRV records only"
  end

  test "a :srv poll names nodes <node_sname>@<host>; :name keeps the port in the name" do
    answers = [{"q", {:ok, [{23_457, "10.0.0.5"}, {23_456, "10.0.0.5"}, {0, "z"}, {1, "_x"}]}}]
    {:ok, srv} = new(node_port: :srv)
    result = Poll.names(answers, srv)
    assert result.found == [:"app@10.0.0.5"]
    assert length(result.invalid) == 2

    {:ok, name} = new([])
    assert Poll.names(answers, name).found == [:"app-23456@10.0.0.5", :"app-23457@10.0.0.5"]
  end

  test "names without ports are built from valid ports and hosts only, making no atom" do
    alias Caravan.Epmd.NodeName
    assert NodeName.build_srv("app", 23_456, "fd00::1") == {:ok, "app@fd00::1"}
    assert {:error, {:invalid_record, _}} = NodeName.build_srv("app", 0, "h")
    assert {:error, {:invalid_host, _}} = NodeName.build_srv("app", 1, ".")
  end
end
