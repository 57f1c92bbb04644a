defmodule Caravan.EpmdTest do
  use ExUnit.Case, async: true
  doctest Caravan.Epmd

  alias Caravan.Epmd

  describe "dist_port/1 through the NIF" do
    test "Caravan 1.x examples, as atom, charlist and binary" do
      for {name, port} <- [
            {"app-4370@host", 4370},
            {"app-name3434@example.net", 3434},
            {"app-name-4834@example.net", 4834},
            {"app@host", 4370},
            {"app-9000", 9000},
            {"app-04370@host", 4370},
            {"app-1@h", 1},
            {"app-65535@h", 65_535},
            {"app-5000@10.0.0.1", 5000},
            {"app-5000@::1", 5000}
          ],
          form <- [String.to_atom(name), String.to_charlist(name), name] do
        assert Epmd.dist_port(form) == port, "#{inspect(form)}"
        assert Epmd.fetch_dist_port(form) == {:ok, port}
      end
    end

    test "bad node names give a typed error naming the value" do
      for {input, kind} <- [
            {"", :empty},
            {:"", :empty},
            {"@host", :empty_name},
            {"app@", :empty_host},
            {"app.1@host", :invalid_name},
            {"app 1@host", :invalid_name},
            {"äpp-1@host", :invalid_name},
            {"app-0@host", :port_out_of_range},
            {"app-65536@host", :port_out_of_range},
            {"app-100000000000000000000@host", :port_out_of_range},
            {"a@" <> String.duplicate("h", 300), :too_long},
            {String.to_charlist("a@" <> String.duplicate("h", 300)), :too_long},
            {<<0xFF, 0xFE, ?@, ?h>>, :not_a_node_name},
            {42, :not_a_node_name},
            {[[?a]], :not_a_node_name},
            {[?a | ?b], :not_a_node_name},
            {%{}, :not_a_node_name},
            {self(), :not_a_node_name},
            {{:app, :host}, :not_a_node_name}
          ] do
        assert {:error, {^kind, message}} = Epmd.fetch_dist_port(input), inspect(input)
        assert is_binary(message)
        assert_raise ArgumentError, message, fn -> Epmd.dist_port(input) end
      end
    end

    test "messages name the value and what was expected" do
      assert {:error, {:port_out_of_range, message}} = Epmd.fetch_dist_port(:"app-70000@host")
      assert message =~ "app-70000@host"
      assert message =~ "1..65535"

      assert {:error, {:invalid_name, message}} = Epmd.fetch_dist_port("my.app-1@host")
      assert message =~ ~s("my.app-1")
      assert message =~ "letters, digits"
    end

    # ASCII atoms are read into a stack buffer; every other atom takes the
    # general path. Both must read the same text.
    test "atoms at the buffer's edge and beyond ASCII read as their text" do
      longest = String.to_atom("app-1@" <> String.duplicate("h", 249))
      assert longest |> Atom.to_string() |> String.length() == 255
      assert Epmd.fetch_dist_port(longest) == {:ok, 1}

      # A Latin-1 host part is fine; only the name part is checked.
      assert Epmd.fetch_dist_port(String.to_atom("app-2@höst")) == {:ok, 2}

      # "Ã©" is Latin-1 0xC3 0xA9, which as UTF-8 would read "é": the
      # message must show the atom's own text.
      assert {:error, {:invalid_name, message}} = Epmd.fetch_dist_port(String.to_atom("Ã©-1@h"))
      assert message =~ ~s("Ã©-1")
      assert {:error, {:invalid_name, _}} = Epmd.fetch_dist_port(String.to_atom("äpp-1@host"))
    end

    test "a huge binary is refused without being walked" do
      huge = String.duplicate("a", 10_000_000) <> "-4370@host"
      assert {:error, {:too_long, _}} = Epmd.fetch_dist_port(huge)
    end
  end

  describe "listen_port/1" do
    test "release helper nodes listen on any port" do
      assert Epmd.listen_port(:"rem-1a2b-app-4370@host") == {:ok, 0}
      assert Epmd.listen_port(~c"rpc-ffff-app-4370") == {:ok, 0}
    end

    test "other nodes, and look-alikes, listen on the port from their name" do
      assert Epmd.listen_port(:"app-4370@host") == {:ok, 4370}
      assert Epmd.listen_port(:"rpc-server-4371@host") == {:ok, 4371}
      assert {:error, {:invalid_name, _}} = Epmd.listen_port(:"rem-1a2b-a.b@host")
    end
  end

  test "Caravan.Native.load/0 is idempotent" do
    assert Caravan.Native.load() == :ok
    assert Caravan.Native.load() == :ok
    assert Epmd.dist_port(:"app-1234@h") == 1234
  end
end
