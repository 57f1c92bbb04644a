defmodule Caravan.Cluster.ConnectorStreakTest do
  # A failed connect's streak, kept by the connect pool: reported once per
  # interval, its explanation said again only when it changes, and under
  # libcluster a retry in a streak bypasses libcluster (so the connect that
  # ends it is Caravan's to tell).
  use ExUnit.Case, async: true

  alias Caravan.Cluster.Connector

  test "an explanation is logged at a report, and again only when it changes" do
    pool = %Connector{report_interval: 1_000}
    {true, pool} = Connector.report?(pool, :a@h, 0)
    assert {true, pool} = Connector.explained(pool, :a@h, "nothing listens")
    {false, pool} = Connector.report?(pool, :a@h, 10)
    assert {false, pool} = Connector.explained(pool, :a@h, "nothing listens")
    assert {true, pool} = Connector.explained(pool, :a@h, "a different cookie")
    assert {false, _} = Connector.explained(pool, :a@h, "a different cookie")
    # No streak (connected, or DNS dropped it): nothing to say.
    assert {false, _} = Connector.explained(pool, :b@h, "late")
  end

  test "the connect that ends a streak says whether it bypassed libcluster" do
    pool = %Connector{libcluster: true, failing: %{a@h: {0, "x"}}}
    assert {true, pool} = Connector.connected(pool, :a@h)
    assert pool.failing == %{}
    assert {false, _} = Connector.connected(pool, :a@h)
    assert {false, _} = Connector.connected(%Connector{failing: %{a@h: {0, nil}}}, :a@h)
  end
end
