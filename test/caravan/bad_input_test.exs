defmodule Caravan.BadInputTest do
  # Bad node names through every entry point: Caravan.Epmd's functions, each
  # callback of the epmd module called directly, and the strategy's name
  # building. Each shape gets a typed error naming the value, or the
  # documented answer; nothing raises from inside the NIF. Then a generator
  # loop compares the NIF (decode layer included) with a reference rule
  # written here on random names. The Rust rule has its own property tests
  # (native/caravan_core/tests/node_name_props.rs).
  #
  # async: false because register_node/3 writes the node's registration.
  use ExUnit.Case, async: false

  alias Caravan.Epmd
  alias Caravan.Epmd.Client

  @long_host String.duplicate("h", 300)

  # {input, expected}: expected is {:ok, port} or the error kind.
  # "Documented" answers are in Caravan.Epmd's moduledoc and node_name.rs.
  defp shapes do
    [
      # empty, in each form
      {"", :empty},
      {:"", :empty},
      {~c"", :empty},
      # no name part, no host part
      {"@host", :empty_name},
      {:"@host", :empty_name},
      {~c"@", :empty_name},
      {"app@", :empty_host},
      # ports at and beyond the bounds
      {"app-0@host", :port_out_of_range},
      {:"app-0@host", :port_out_of_range},
      {"app-000@host", :port_out_of_range},
      {"app-65536@host", :port_out_of_range},
      {~c"app-65536@host", :port_out_of_range},
      {"app-100000000000000000000@host", :port_out_of_range},
      {"app-" <> String.duplicate("9", 200) <> "@h", :port_out_of_range},
      {"app-1@host", {:ok, 1}},
      {"app-65535@host", {:ok, 65_535}},
      # leading zeros are read as decimal (Caravan 1.x), not octal
      {"app-04370@host", {:ok, 4370}},
      {"app-0080@host", {:ok, 80}},
      {"app-010@host", {:ok, 10}},
      # a name part of digits only, and none at all
      {"4370@host", {:ok, 4370}},
      {"app@host", {:ok, 4370}},
      # only the first '@' splits; the host part is not checked beyond being
      # non-empty (OTP takes host names and IP literals there)
      {"app-1@b@c", {:ok, 1}},
      {"app-1@höst", {:ok, 1}},
      {"app-1@::1", {:ok, 1}},
      {:"app-1@ホスト", {:ok, 1}},
      {:"app-١@host", :invalid_name},
      # non-ASCII in the name part, in each form
      {"äpp-1@host", :invalid_name},
      {:"äpp-1@host", :invalid_name},
      {~c"äpp-1@host", :invalid_name},
      {"app-١٢@host", :invalid_name},
      {"app-1\u0000@host", :invalid_name},
      {"app 1@host", :invalid_name},
      {"app.1@host", :invalid_name},
      # invalid UTF-8 and invalid code points
      {<<0xFF, 0xFE, ?@, ?h>>, :not_a_node_name},
      {<<"app-", 0xC0, 0x80, "@h">>, :not_a_node_name},
      {<<"app-", 0xED, 0xA0, 0x80, "@h">>, :not_a_node_name},
      {[?a, 0xD800, ?@, ?h], :not_a_node_name},
      {[?a, 0x110000, ?@, ?h], :not_a_node_name},
      {[?a, -1, ?@, ?h], :not_a_node_name},
      # 256+ characters (an atom holds 255); length counts characters
      {"a@" <> @long_host, :too_long},
      {String.to_charlist("a@" <> @long_host), :too_long},
      {"a@" <> String.duplicate("h", 253), {:ok, 4370}},
      {"a@" <> String.duplicate("é", 253), {:ok, 4370}},
      {"a@" <> String.duplicate("é", 254), :too_long},
      {String.duplicate("a", 10_000_000), :too_long},
      # other terms: integers, nested and improper lists, ...
      {0, :not_a_node_name},
      {4370, :not_a_node_name},
      {-1, :not_a_node_name},
      {100_000_000_000_000_000_000, :not_a_node_name},
      {1.5, :not_a_node_name},
      {[[?a]], :not_a_node_name},
      {[~c"app-1", ~c"@h"], :not_a_node_name},
      {["app-1@h"], :not_a_node_name},
      {[?a | ?b], :not_a_node_name},
      {<<1::3>>, :not_a_node_name},
      {{:app, :host}, :not_a_node_name},
      {%{}, :not_a_node_name},
      {self(), :not_a_node_name},
      {make_ref(), :not_a_node_name},
      {fn -> :ok end, :not_a_node_name},
      {nil, {:ok, 4370}},
      {true, {:ok, 4370}}
    ]
  end

  describe "Caravan.Epmd" do
    test "dist_port/1, fetch_dist_port/1 and listen_port/1 give the documented answer or a typed error" do
      for {input, expected} <- shapes() do
        label = inspect(input, limit: 8, printable_limit: 40)

        case expected do
          {:ok, port} ->
            assert Epmd.fetch_dist_port(input) == {:ok, port}, label
            assert Epmd.dist_port(input) == port, label
            assert Epmd.listen_port(input) == {:ok, port}, label

          kind ->
            assert {:error, {^kind, message}} = Epmd.fetch_dist_port(input), label
            assert_raise ArgumentError, message, fn -> Epmd.dist_port(input) end
            assert {:error, {^kind, ^message}} = Epmd.listen_port(input), label
            assert_names_the_value(input, kind, message)
        end
      end
    end
  end

  describe "each epmd callback, called directly" do
    test "port_please/2,3: {:port, port, 6} or :noport" do
      for {input, expected} <- shapes() do
        want =
          case expected do
            {:ok, port} -> {:port, port, 6}
            _ -> :noport
          end

        assert Client.port_please(input, {127, 0, 0, 1}) == want, inspect(input, limit: 8)
        assert Client.port_please(input, {127, 0, 0, 1}, 1_000) == want
      end
    end

    test "listen_port_please/2: {:ok, port} or the typed error (printed, as at boot)" do
      # Every valid shape, and one bad shape per error kind: each error is
      # printed to stdout (as at boot, before Logger exists), and
      # listen_port/1, which it calls, has seen every bad shape above.
      one_per_kind =
        shapes()
        |> Enum.uniq_by(fn {_input, expected} ->
          if match?({:ok, _}, expected), do: make_ref(), else: expected
        end)

      for {input, expected} <- one_per_kind do
        case expected do
          {:ok, port} ->
            assert Client.listen_port_please(input, ~c"host") == {:ok, port}

          kind ->
            assert {:error, {^kind, _}} = Client.listen_port_please(input, ~c"host"),
                   inspect(input, limit: 8)
        end
      end
    end

    test "address_please/3: {:ok, ip, port, 6} or a typed error; bad hosts give :einval" do
      for {input, expected} <- shapes() do
        case expected do
          {:ok, port} ->
            assert Client.address_please(input, ~c"127.0.2.1", :inet) ==
                     {:ok, {127, 0, 2, 1}, port, 6}

          kind ->
            assert {:error, {^kind, _}} = Client.address_please(input, ~c"127.0.2.1", :inet),
                   inspect(input, limit: 8)
        end
      end

      # Host shapes that are refused before anything is asked (no shape
      # here may reach the OS resolver: this machine's must not be asked).
      for host <- [
            42,
            1.5,
            %{},
            {127, 0, 2, 1},
            [[?a]],
            [~c"127.0.2.1"],
            [?a | ?b],
            # An empty host part, in each form (OTP 27+'s :inet.getaddr/2
            # would ask the resolver for it).
            ~c"",
            "",
            :"",
            [0x110000],
            <<0xFF, ?a>>
          ],
          family <- [:inet, :inet6, :bogus] do
        assert Client.address_please(~c"app-4800", host, family) == {:error, :einval},
               inspect({host, family})
      end

      assert Client.address_please(~c"app-4800", ~c"127.0.2.1", :bogus) == {:error, :einval}
      # A host as a string or an atom is read like a charlist.
      assert Client.address_please(~c"app-4800", "127.0.2.1", :inet) ==
               {:ok, {127, 0, 2, 1}, 4800, 6}

      assert Client.address_please(~c"app-4800", :"127.0.2.1", :inet) ==
               {:ok, {127, 0, 2, 1}, 4800, 6}
    end

    test "register_node/2,3 records valid names and refuses the rest, recording nothing" do
      for {input, expected} <- shapes(), port <- [4800] do
        before = Client.names(~c"host")

        case expected do
          {:ok, _} ->
            assert Client.register_node(input, port, :inet_tcp) == {:ok, -1}
            assert Client.register_node(input, port) == {:ok, -1}
            assert {:ok, [{name, ^port}]} = Client.names(~c"host")
            assert name == to_charlist(input)

          kind ->
            assert {:error, {^kind, _}} = Client.register_node(input, port, :inet),
                   inspect(input, limit: 8)

            assert {:error, {^kind, _}} = Client.register_node(input, port)
            assert Client.names(~c"host") == before
        end
      end

      for port <- [0, -1, 65_536, 100_000_000_000_000_000_000, "4800", nil, 4800.0] do
        assert {:error, {:invalid_port, message}} =
                 Client.register_node(:"app-4800", port, :inet_tcp)

        assert message =~ inspect(port)
      end
    end

    test "names/1 answers for any host term (the host is not used)" do
      Client.register_node(:"app-4801", 4801, :inet_tcp)

      for {input, _} <- shapes() do
        assert Client.names(input) == {:ok, [{~c"app-4801", 4801}]}
      end
    end
  end

  describe "the strategy's name building, Caravan.Epmd.node_name/3" do
    test "bad ports, hosts and node_snames give a typed error and make no atom" do
      cases = [
        {"app", 0, "h", :port_out_of_range},
        {"app", 65_536, "h", :port_out_of_range},
        {"app", 100_000_000_000_000_000_000, "h", :port_out_of_range},
        {"app", -1, "h", :port_mismatch},
        {"app", 4800, "", :invalid_host},
        {"app", 4800, ".", :invalid_host},
        {"app", 4800, "a..b", :invalid_host},
        {"app", 4800, "bad host", :invalid_host},
        {"app", 4800, "we_b.consul", :invalid_host},
        {"app", 4800, "-lead.consul", :invalid_host},
        {"app", 4800, "trail-.consul", :invalid_host},
        {"app", 4800, "a\\032b.consul", :invalid_host},
        {"app", 4800, "wéb.consul", :invalid_host},
        {"app", 4800, <<"w", 0xFF, "b">>, :invalid_host},
        {"app", 4800, String.duplicate("a", 64) <> ".consul", :invalid_host},
        {"app", 4800, String.duplicate("abcdefg.", 32) <> "x", :invalid_host},
        {"app", 4800, "h@x", :invalid_host},
        {"app.x", 4800, "h", :invalid_name},
        {"äpp", 4800, "h", :invalid_name},
        {String.duplicate("a", 300), 4800, "h", :too_long},
        {"app", 4800, String.duplicate("h.", 125) <> "h", :too_long},
        {"app", "4800", "h", :invalid_record},
        {"app", 4800, ~c"h", :invalid_record},
        {:app, 4800, "h", :invalid_record},
        {"app", 4800.0, "h", :invalid_record},
        {"app", nil, nil, :invalid_record}
      ]

      for {sname, port, host, kind} <- cases do
        assert {:error, {^kind, message}} = Caravan.Epmd.node_name(sname, port, host),
               inspect({sname, port, host}, limit: 8, printable_limit: 40)

        assert is_binary(message)
      end

      # Again, now that the modules it uses are loaded (loading makes atoms).
      for {sname, port, host, _kind} <- cases do
        atoms = :erlang.system_info(:atom_count)
        Caravan.Epmd.node_name(sname, port, host)
        assert :erlang.system_info(:atom_count) == atoms, inspect({sname, port, host}, limit: 8)
      end
    end

    test "valid records give the node name whose port is the SRV port" do
      assert Caravan.Epmd.node_name("app", 1, "h") == {:ok, :"app-1@h"}
      assert Caravan.Epmd.node_name("app", 65_535, "h") == {:ok, :"app-65535@h"}
      assert Caravan.Epmd.node_name("app", 4800, "127.0.2.1") == {:ok, :"app-4800@127.0.2.1"}
      assert Caravan.Epmd.node_name("app", 4800, "::1") == {:ok, :"app-4800@::1"}
      assert Caravan.Epmd.node_name("a-b_c", 4800, "x-1.y") == {:ok, :"a-b_c-4800@x-1.y"}
      # A name part ending in digits: "app1-4800" still ends in 4800.
      assert Caravan.Epmd.node_name("app1", 4800, "h") == {:ok, :"app1-4800@h"}
    end
  end

  describe "generator loop: the NIF against a reference rule written in Elixir" do
    @cases 10_000

    test "#{@cases} random names as atoms, charlists and binaries" do
      seed = seed()
      :rand.seed(:exsss, {seed, seed, seed})
      atoms_made_by_caravan = :counters.new(1, [])

      # Load every module the entry points use first: loading makes atoms.
      for {input, _} <- shapes() do
        Epmd.fetch_dist_port(input)
        Epmd.listen_port(input)
        Client.port_please(input, {127, 0, 0, 1})
        Client.address_please(input, ~c"127.0.2.1", :inet)
      end

      for i <- 1..@cases do
        input = random_input()
        context = "case #{i}, seed #{seed} (CARAVAN_SEED=#{seed} to replay): #{inspect(input)}"
        atoms = :erlang.system_info(:atom_count)

        port = reference_dist_port(input)

        assert norm(Epmd.fetch_dist_port(input)) == port, context
        assert norm(Epmd.listen_port(input)) == reference_listen_port(input, port), context

        assert Client.port_please(input, {127, 0, 0, 1}) ==
                 (case port do
                    {:ok, p} -> {:port, p, 6}
                    _ -> :noport
                  end),
               context

        assert norm(Client.address_please(input, ~c"127.0.2.1", :inet)) ==
                 (case port do
                    {:ok, p} -> {:ok, {127, 0, 2, 1}, p, 6}
                    error -> error
                  end),
               context

        :counters.add(atoms_made_by_caravan, 1, :erlang.system_info(:atom_count) - atoms)
      end

      assert :counters.get(atoms_made_by_caravan, 1) == 0
    end
  end

  # -- helpers ---------------------------------------------------------------

  defp assert_names_the_value(input, kind, message) do
    # Empty and too-long names are not repeated; nor are terms of other types
    # (a pid or a 10 MB binary would make a useless message).
    if kind not in [:empty, :too_long, :not_a_node_name] do
      text = if is_list(input), do: List.to_string(input), else: to_string(input)
      # Rust writes a NUL as \0 where inspect/1 falls back to <<...>>.
      assert message =~ String.replace(inspect(text, binaries: :as_strings), "\\x00", "\\0"),
             "#{message} does not name #{inspect(text)}"
    end

    assert message =~ ~r/expected|not a port|at most/
  end

  defp seed do
    case System.get_env("CARAVAN_SEED") do
      nil -> 20_250_501
      text -> String.to_integer(text)
    end
  end

  # Characters that matter to the rule, weighted towards the plausible.
  @alphabet ~c"abcxyzAZ" ++
              ~c"0123456789" ++
              ~c"000---@@._ " ++
              [?é, 0x0661, 0x1F600, 0]

  defp random_input do
    chars =
      case :rand.uniform(20) do
        1 -> random_chars(250 + :rand.uniform(12))
        _ -> random_chars(:rand.uniform(24) - 1)
      end

    case :rand.uniform(20) do
      n when n <= 2 and length(chars) <= 255 -> List.to_atom(chars)
      n when n <= 10 -> chars |> maybe_bad_code_point()
      _ -> chars |> List.to_string() |> maybe_bad_utf8()
    end
  end

  defp random_chars(n), do: for(_ <- 1..n//1, do: Enum.random(@alphabet))

  defp maybe_bad_code_point(chars) do
    case :rand.uniform(30) do
      1 -> List.insert_at(chars, :rand.uniform(length(chars) + 1) - 1, 0xD800)
      2 -> chars ++ [0x110000]
      3 -> [-1 | chars]
      4 -> [chars]
      _ -> chars
    end
  end

  defp maybe_bad_utf8(binary) do
    case :rand.uniform(30) do
      1 -> binary <> <<0xFF>>
      2 -> <<0xC0, 0x80>> <> binary
      3 -> binary <> <<0xED, 0xA0, 0x80>>
      _ -> binary
    end
  end

  # The reference: the decode layer, then the rule, the obvious way.
  defp reference_dist_port(input) do
    with {:ok, text} <- reference_decode(input) do
      reference_rule(text)
    end
  end

  defp reference_decode(input) when is_atom(input), do: {:ok, Atom.to_string(input)}

  defp reference_decode(input) when is_binary(input) do
    cond do
      byte_size(input) > 4 * 255 -> error(:too_long)
      String.valid?(input) -> {:ok, input}
      true -> error(:not_a_node_name)
    end
  end

  defp reference_decode(input) when is_list(input) do
    cond do
      not proper_list?(input) -> error(:not_a_node_name)
      length(input) > 255 -> error(:too_long)
      Enum.all?(input, &code_point?/1) -> {:ok, List.to_string(input)}
      true -> error(:not_a_node_name)
    end
  end

  defp reference_decode(_other), do: error(:not_a_node_name)

  defp reference_rule(text) do
    [name | host] = String.split(text, "@", parts: 2)

    cond do
      text == "" -> error(:empty)
      length(String.codepoints(text)) > 255 -> error(:too_long)
      name == "" -> error(:empty_name)
      host == [""] -> error(:empty_host)
      not (name =~ ~r/\A[0-9A-Za-z_-]+\z/) -> error(:invalid_name)
      true -> reference_port(Regex.run(~r/[0-9]*\z/, name))
    end
  end

  defp reference_port([""]), do: {:ok, 4370}

  defp reference_port([digits]) do
    case String.to_integer(digits) do
      port when port in 1..65_535 -> {:ok, port}
      _ -> error(:port_out_of_range)
    end
  end

  defp reference_listen_port(input, port) do
    {:ok, text} = reference_decode(input)
    [name | _] = String.split(text, "@", parts: 2)
    helper? = name =~ ~r/\A(rem|rpc)-[0-9a-fA-F]{1,16}-.+\z/s

    case port do
      {:ok, _} when helper? -> {:ok, 0}
      {:error, {:port_out_of_range, _}} when helper? -> {:ok, 0}
      other -> other
    end
  rescue
    # No text to look at: the decode error stands.
    MatchError -> port
  end

  # Errors are compared by kind; the message is checked above.
  defp error(kind), do: {:error, {kind, :_}}

  defp norm({:error, {kind, message}}) when is_atom(kind) and is_binary(message),
    do: error(kind)

  defp norm(other), do: other

  defp proper_list?([]), do: true
  defp proper_list?([_ | tail]), do: proper_list?(tail)
  defp proper_list?(_), do: false

  defp code_point?(c), do: is_integer(c) and c in 0..0x10FFFF and c not in 0xD800..0xDFFF
end
