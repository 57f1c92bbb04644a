defmodule Caravan.Cluster.Config.KeysTest do
  # The key list of a topology config on its own (Caravan.Cluster.Config.Values);
  # the whole config, values included, is tested through Config.new/1 in
  # dns_strategy_test.exs and address_records_test.exs.
  use ExUnit.Case, async: true

  alias Caravan.Cluster.Config
  alias Caravan.Cluster.Config.Values, as: Keys

  test "every key of the config struct a user may set is a known key, and Config says the same" do
    settable = Map.keys(%Config{}) -- [:__struct__, :queries, :libcluster]
    assert settable -- Keys.known() == []
    assert Config.known_keys() == Keys.known()
    assert :query in Keys.known() and :consul_service in Keys.known()
  end

  test "a misspelt key is named with the nearest known key; a far one with none" do
    assert Keys.nearest(:pol_interval) == :poll_interval
    assert Keys.nearest(:nameserver) == :nameservers
    assert Keys.nearest(:node_name) in [:node_sname, :node_basename]
    assert Keys.nearest(:xyz) == nil

    assert {:error, {:invalid_option, message}} =
             Keys.check(query: "q", pol_interval: 1, xyz: 2, xyz: 3)

    assert message =~ ~r/^unknown key :pol_interval; did you mean :poll_interval\?; /
    # Each unknown key once, the far one without a suggestion.
    assert message =~ "; unknown key :xyz (known keys: :query, :consul_service,"
    assert Keys.check(query: "q", node_sname: "app") == :ok
    assert Keys.check([]) == :ok
  end

  test "the aliases of Caravan 1.x and DNSPoll are read as their keys; the key itself wins" do
    assert Keys.aliases(consul_service: "a")[:query] == "a"
    assert Keys.aliases(query: "q", consul_service: "a")[:query] == "q"
    assert Keys.aliases(query: "q", polling_interval: 7)[:poll_interval] == 7
    assert Keys.aliases(query: "q", poll_interval: 5, polling_interval: 7)[:poll_interval] == 5
    refute Keyword.has_key?(Keys.aliases(query: "q"), :poll_interval)
  end
end
