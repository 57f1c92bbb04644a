defmodule Caravan.DNS.OptionsTest do
  # The one validation of the lookup options (Caravan.DNS, the strategy's
  # config, the boot flags and mix caravan.lookup all use it).
  use ExUnit.Case, async: true

  alias Caravan.DNS.Options

  test "defaults" do
    assert Options.new([]) ==
             {:ok, %Options{nameservers: [], timeout: 2_000, node_host: :auto}}

    assert Options.default_timeout() == 2_000
  end

  test "nameservers are normalised to IP:PORT with the lookups' own parser" do
    assert Options.nameservers([
             "127.0.0.1:8600",
             "10.0.0.1",
             {"10.0.0.2", "8600"},
             {{10, 0, 0, 3}, 53}
           ]) ==
             {:ok, ["127.0.0.1:8600", "10.0.0.1:53", "10.0.0.2:8600", "10.0.0.3:53"]}

    assert Options.nameservers("::1") == {:ok, ["[::1]:53"]}
    assert Options.nameservers({{0, 0, 0, 0, 0, 0, 0, 1}, 8600}) == {:ok, ["[::1]:8600"]}
  end

  test "parse/1 parses once into {ip_tuple, port}, the form the lookup NIFs take" do
    assert Options.parse(["127.0.0.1:8600", "10.0.0.1", "[::1]:53", {"10.0.0.2", "8600"}]) ==
             {:ok,
              [
                {{127, 0, 0, 1}, 8600},
                {{10, 0, 0, 1}, 53},
                {{0, 0, 0, 0, 0, 0, 0, 1}, 53},
                {{10, 0, 0, 2}, 8600}
              ]}

    # The parsed form passes through unchanged, and is written back as text.
    assert Options.parse({{10, 0, 0, 3}, 53}) == {:ok, [{{10, 0, 0, 3}, 53}]}

    assert Options.new(nameservers: ["127.0.0.1:8600"]) ==
             {:ok, %Options{nameservers: [{{127, 0, 0, 1}, 8600}]}}

    assert Options.text({{127, 0, 0, 1}, 8600}) == "127.0.0.1:8600"
    assert Options.text({{0xFD00, 0, 0, 0, 0, 0, 0, 1}, 53}) == "[fd00::1]:53"
    assert {:error, {:invalid_nameserver, _}} = Options.parse([{{1, 2, 3}, 53}])
    assert {:error, {:invalid_nameserver, _}} = Options.parse([{{256, 0, 0, 1}, 53}])
  end

  test "the lookup NIFs take parsed nameservers only: text is refused, not parsed again" do
    assert {:ok, {{127, 0, 0, 1}, 8600}} = Caravan.Native.nameserver("127.0.0.1:8600")

    assert_raise ArgumentError, fn ->
      Caravan.Native.srv_lookup("a.consul", ["127.0.0.1:8600"], 100, :auto, false)
    end

    assert_raise ArgumentError, fn ->
      Caravan.Native.host_lookup("a.consul", :inet, [{{127, 0, 0, 1}, 0}], 100, false)
    end
  end

  test "errors name the value and what was expected" do
    assert Options.nameservers(["consul:8600"]) ==
             {:error,
              {:invalid_nameserver,
               ~s(invalid nameserver "consul:8600"; expected "IP" or "IP:PORT", e.g. "127.0.0.1:8600" or "[::1]:53")}}

    assert Options.nameservers([:consul]) ==
             {:error,
              {:invalid_nameserver,
               ~s(invalid nameserver :consul; expected "IP", "IP:PORT", {"IP", port} or {ip_tuple, port})}}

    assert {:error, {:invalid_nameserver, _}} = Options.nameservers([{"10.0.0.1", 0}])
    assert {:error, {:invalid_option, msg}} = Options.new(timeout: 0)
    assert msg =~ "expected :timeout as a positive integer (ms), got: 0"
    assert {:error, {:invalid_option, msg}} = Options.new(node_host: :dns)
    assert msg =~ ":auto, :target or :ip, got: :dns"
    assert {:error, {:invalid_option, _}} = Options.new(:nope)
  end
end
