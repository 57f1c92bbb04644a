defmodule Caravan.Epmd.ClientTest do
  # Caravan.Epmd.Client's callbacks called in-process; real nodes booted
  # with it are in test/integration/epmd_client_test.exs. Not async:
  # register_node/2,3 writes this node's registration.
  use ExUnit.Case, async: false

  alias Caravan.Epmd.Client

  describe "callbacks, called in-process" do
    test "start_link/0 loads the NIF and returns :ignore" do
      assert Client.start_link() == :ignore
    end

    test "register_node/2,3 asks net_kernel for a random creation, for every driver" do
      for driver <- [:inet_tcp, :inet6_tcp, :inet, :inet6] do
        assert Client.register_node(:"app-4370", 4370, driver) == {:ok, -1}
      end

      assert Client.register_node(:"app-4370", 4370) == {:ok, -1}
      assert Client.names(~c"localhost") == {:ok, [{~c"app-4370", 4370}]}
    end

    test "listen_port_please/2 gives the port from the name, 0 for release helpers" do
      assert Client.listen_port_please(:"app-4370", ~c"host") == {:ok, 4370}
      assert Client.listen_port_please(:"app-9100", ~c"host") == {:ok, 9100}
      assert Client.listen_port_please(:"rem-1a2b-app-4370", ~c"host") == {:ok, 0}
      assert Client.listen_port_please(:app, ~c"host") == {:ok, 4370}

      assert {:error, {:port_out_of_range, _}} = Client.listen_port_please(:"app-99999", ~c"host")
    end

    test "port_please/2,3 gives {:port, port, 6} or :noport" do
      assert Client.port_please(~c"app-4370", {127, 0, 0, 1}) == {:port, 4370, 6}
      assert Client.port_please(~c"app-4371", {127, 0, 0, 1}, 5_000) == {:port, 4371, 6}
      assert Client.port_please(~c"app", {127, 0, 0, 1}) == {:port, 4370, 6}
      assert Client.port_please(~c"app-0", {127, 0, 0, 1}) == :noport
      assert Client.port_please(~c"a.b", {127, 0, 0, 1}) == :noport
    end

    test "address_please/3 resolves IP literals and localhost with the port" do
      assert Client.address_please(~c"app-4370", ~c"127.0.0.2", :inet) ==
               {:ok, {127, 0, 0, 2}, 4370, 6}

      assert Client.address_please(~c"app-4371", ~c"::1", :inet6) ==
               {:ok, {0, 0, 0, 0, 0, 0, 0, 1}, 4371, 6}

      assert Client.address_please(~c"app-4372", ~c"localhost", :inet) ==
               {:ok, {127, 0, 0, 1}, 4372, 6}

      assert {:error, {:port_out_of_range, _}} =
               Client.address_please(~c"app-0", ~c"127.0.0.1", :inet)
    end
  end
end
