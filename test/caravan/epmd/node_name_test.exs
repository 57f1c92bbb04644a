defmodule Caravan.Epmd.NodeNameTest do
  # The inverse of the port rule: SRV port + target -> node name. The
  # exhaustive bad-input cases are in Caravan.BadInputTest; the doctests of
  # Caravan.Epmd.node_name/3 run in Caravan.EpmdTest.
  use ExUnit.Case, async: true

  alias Caravan.Epmd.NodeName

  test "builds names from SRV records, IPv6 hosts included" do
    assert Caravan.Epmd.node_name("app", 4370, "10.0.0.1") == {:ok, :"app-4370@10.0.0.1"}
    assert Caravan.Epmd.node_name("app", 4370, "fd00::1") == {:ok, :"app-4370@fd00::1"}

    assert NodeName.build("app", 4370, "web1.node.dc1.consul") ==
             {:ok, "app-4370@web1.node.dc1.consul"}
  end

  test "refuses what is not a node name, making no atom" do
    assert {:error, {:invalid_host, _}} = Caravan.Epmd.node_name("app", 4370, "bad host")
    assert {:error, {:invalid_host, _}} = Caravan.Epmd.node_name("app", 4370, "")
    assert {:error, {:port_out_of_range, _}} = Caravan.Epmd.node_name("app", 0, "h")
    assert {:error, {:invalid_record, _}} = Caravan.Epmd.node_name("app", "4370", "h")

    assert {:error, {:invalid_host, _}} =
             NodeName.build("app", 4370, "never-an-atom-#{System.unique_integer()}_x")
  end

  test "host checking: IP literals and RFC 1123 names only" do
    for host <- ["h", "web-1.node.dc1.consul", "10.0.0.1", "::1", String.duplicate("a", 63)],
        do: assert(NodeName.valid_host?(host), host)

    for host <- [
          "",
          ".",
          "a..b",
          "-a",
          "a-",
          "a_b",
          "a b",
          "é",
          String.duplicate("a", 64),
          String.duplicate("a.", 127) <> "a"
        ],
        do: refute(NodeName.valid_host?(host), host)
  end
end
