defmodule Caravan.Cluster.ConnectorTest do
  # The connect pool on its own: the connect MFA is a function of this test
  # that reports to the test process and answers as told.
  use ExUnit.Case, async: true

  alias Caravan.Cluster.{Config, Connector}

  # The connect MFA: tells the test it started, then waits for the answer.
  def connect(test, node) do
    send(test, {:started, node, self()})

    receive do
      {:answer, :raise} -> raise "refused"
      {:answer, :exit} -> exit(:shutdown)
      {:answer, answer} -> answer
    end
  end

  defp pool(opts) do
    config =
      struct!(
        Config,
        Keyword.merge([connect: {__MODULE__, :connect, [self()]}, connect_timeout: 5_000], opts)
      )

    Connector.new(config)
  end

  # Feeds the pool the messages it sent itself until one connect is done.
  defp next_done(pool) do
    receive do
      message when elem(message, 0) in [Connector, :DOWN] ->
        case Connector.handle(pool, message) do
          {:done, node, result, pool} -> {node, result, pool}
          :unknown -> next_done(pool)
        end
    after
      5_000 -> flunk("no connect finished")
    end
  end

  test "at most connect_concurrency connects run; the rest start as slots free" do
    pool = pool(connect_concurrency: 2) |> Connector.enqueue([:a@h, :b@h, :c@h, :a@h])
    assert_receive {:started, :a@h, a}
    assert_receive {:started, :b@h, _b}
    refute_receive {:started, :c@h, _}, 100
    assert Enum.sort(Connector.pending(pool)) == [:a@h, :b@h, :c@h]

    # Already pending: not queued twice.
    pool = Connector.enqueue(pool, [:c@h, :b@h])
    assert length(Connector.pending(pool)) == 3

    send(a, {:answer, true})
    assert {:a@h, true, pool} = next_done(pool)
    assert_receive {:started, :c@h, _c}
    assert Enum.sort(Connector.pending(pool)) == [:b@h, :c@h]
  end

  test "results come back as values: false, raised, exited" do
    pool = pool(connect_concurrency: 3) |> Connector.enqueue([:a@h, :b@h, :c@h])
    assert_receive {:started, :a@h, a}
    assert_receive {:started, :b@h, b}
    assert_receive {:started, :c@h, c}
    send(a, {:answer, false})
    assert {:a@h, false, pool} = next_done(pool)
    send(b, {:answer, :raise})
    assert {:b@h, {:raised, banner}, pool} = next_done(pool)
    assert banner =~ "refused"
    send(c, {:answer, :exit})
    assert {:c@h, {:raised, "** (exit) shutdown"}, pool} = next_done(pool)
    assert Connector.pending(pool) == []
  end

  test "a connect past connect_timeout is killed and reported as :timeout" do
    pool = pool(connect_timeout: 50) |> Connector.enqueue([:slow@h])
    assert_receive {:started, :slow@h, pid}
    ref = Process.monitor(pid)
    assert {:slow@h, :timeout, pool} = next_done(pool)
    assert_receive {:DOWN, ^ref, :process, ^pid, :killed}
    assert Connector.pending(pool) == []
  end

  test "a connect process killed from outside is reported as {:exit, reason}" do
    pool = pool([]) |> Connector.enqueue([:a@h])
    assert_receive {:started, :a@h, pid}
    Process.exit(pid, :kill)
    assert {:a@h, {:exit, :killed}, _pool} = next_done(pool)
  end

  test "messages that are not the pool's are :unknown" do
    pool = pool([])
    assert Connector.handle(pool, :other) == :unknown
    assert Connector.handle(pool, {Connector, make_ref(), true}) == :unknown
    assert Connector.handle(pool, {:DOWN, make_ref(), :process, self(), :normal}) == :unknown
  end
end
