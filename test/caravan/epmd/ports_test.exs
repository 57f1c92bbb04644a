defmodule Caravan.Epmd.PortsTest do
  # The epmd module's ports apart from names (Caravan.Epmd.Ports): the table
  # the polls fill, read as the epmd module reads it. Not async: the table
  # and the configured SRV query are global. The connect-time SRV lookup
  # against a real server is in test/integration/dynamic_ports_test.exs.
  use ExUnit.Case, async: false

  alias Caravan.Epmd.Ports

  setup do
    Ports.ensure_table()
    :ets.delete_all_objects(Ports)
    on_exit(fn -> :ets.delete_all_objects(Ports) end)
  end

  test "a listed node is dialed on the port its last poll saw; a moved one follows" do
    :ok = Ports.remember(:t, [{"app@10.0.0.5", 23_456}], true)
    assert Ports.peer_port(~c"app", ~c"10.0.0.5") == {:ok, 23_456, {:srv, :poll, "topology t"}}
    :ok = Ports.remember(:t, [{"app@10.0.0.5", 23_999}], true)
    assert {:ok, 23_999, _} = Ports.peer_port("app", "10.0.0.5")
  end

  test "a complete poll forgets its topology's unlisted nodes; a failed one forgets nothing" do
    :ok = Ports.remember(:t, [{"app@a", 1}, {"app@b", 2}], true)
    :ok = Ports.remember(:other, [{"app@c", 3}], true)
    :ok = Ports.remember(:t, [{"app@a", 1}], false)
    assert {:ok, 2, {:srv, :poll, _}} = Ports.peer_port("app", "b")
    :ok = Ports.remember(:t, [{"app@a", 1}], true)
    # Unlisted, no SRV query configured: the name's port, as without Caravan's dynamic ports.
    assert Ports.peer_port("app", "b") == {:ok, 4370, :name}
    assert {:ok, 3, _} = Ports.peer_port("app", "c")
  end

  test "one name with two ports in one poll is refused, naming both" do
    :ok = Ports.remember(:t, [{"app@10.0.0.5", 23_457}, {"app@10.0.0.5", 23_456}], true)
    assert {:error, {:ambiguous_port, message}} = Ports.peer_port("app", "10.0.0.5")
    assert message =~ "23456, 23457"
    assert Ports.refusal?(:ambiguous_port)
    refute Ports.refusal?(:invalid_name)
  end

  test "names with a port keep the port rule" do
    assert Ports.peer_port("app-4371", "h") == {:ok, 4371, :name}
    assert {:error, {:port_out_of_range, _}} = Ports.peer_port("app-70000", "h")
  end

  test "the listen port of a helper node is 0, else the name's when nothing overrides it" do
    assert Ports.listen_port(:"rem-1f2e-app@h") == {:ok, 0, :helper}
    assert Ports.listen_port(:"app-4372@h") == {:ok, 4372, :name}
  end
end
