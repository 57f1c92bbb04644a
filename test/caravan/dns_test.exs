defmodule Caravan.DNSTest do
  # Caravan.DNS without a server: arguments are checked before any query.
  # Lookups against real servers are in test/integration/srv_lookup_test.exs.
  use ExUnit.Case, async: true

  doctest Caravan.DNS

  test "bad arguments are refused at once, naming the value" do
    assert {:error, {:invalid_query, _}} = Caravan.DNS.lookup_srv("", nameservers: ["127.0.0.1"])
    assert {:error, {:invalid_query, _}} = Caravan.DNS.lookup_srv(:atom)

    assert {:error, {:invalid_nameserver, message}} =
             Caravan.DNS.lookup_srv("a.consul", nameservers: ["consul:8600"])

    assert message =~ "consul:8600"

    assert {:error, {:invalid_nameserver, _}} =
             Caravan.DNS.lookup_srv("a.consul", nameservers: [{"127.0.0.1", 0}])

    assert {:error, {:invalid_option, message}} = Caravan.DNS.lookup_srv("a.consul", timeout: -1)
    assert message =~ "-1"
  end
end
