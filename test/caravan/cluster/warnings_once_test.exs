defmodule Caravan.Cluster.WarningsOnceTest do
  # Quiet defaults: a steady cluster's polls say nothing, silence on a
  # connected node is not "runs alone", and an SRV port that does not match
  # the node's name is found on the node concerned.
  use ExUnit.Case, async: true

  alias Caravan.Cluster.{Config, Warnings}
  alias Caravan.Epmd.NodeName

  @config %{poll_interval: 100, max_nodes: 5}

  defp result(found),
    do: %{found: found, answered: ["q"], errors: [], invalid: [], dropped: 0}

  test "the nodes DNS lists are said when they change, not on every poll" do
    {w, [{:debug, "DNS lists 2 node(s)" <> _}]} =
      Warnings.poll(Warnings.new(), result([:b@h, :a@h]), @config)

    # The same nodes in another order (answers are shuffled): nothing.
    {w, []} = Warnings.poll(w, result([:a@h, :b@h]), @config)
    {w, []} = Warnings.poll(w, result([:b@h, :a@h]), @config)

    {w, [{:debug, "DNS lists 3 node(s)" <> _}]} =
      Warnings.poll(w, result([:a@h, :b@h, :c@h]), @config)

    # A failed lookup is no new list.
    failed = %{result([]) | answered: [], errors: [{"q", {:timeout, "no answer"}}]}
    {w, [{:warning, _}]} = Warnings.poll(w, failed, @config)
    {_w, [{:info, _}]} = Warnings.poll(w, result([:a@h, :b@h, :c@h]), @config)
  end

  describe "DNS listing no instances" do
    setup do
      {:ok, config} =
        Config.new(
          topology: :t,
          query: "_app._tcp.service.consul",
          node_sname: "app",
          nameservers: ["127.0.0.1"]
        )

      %{config: config}
    end

    test "a node with no connections runs alone", %{config: config} do
      {:warning, text} = Warnings.text({:silence, {:start, :no_instances}, [], []}, config)
      assert text =~ "this node runs alone"
    end

    test "a connected node does not say it runs alone", %{config: config} do
      {:warning, text} =
        Warnings.text(
          {:silence, {:start, :no_instances}, [], [:"app-4370@b", :"app-4370@c"]},
          config
        )

      refute text =~ "runs alone"
      assert text =~ "keeps its 2 connection(s) but finds no new peers"
    end
  end

  describe "an SRV port that does not match the node's name" do
    test "found when DNS leaves this node out and lists its name and host with another port" do
      text =
        NodeName.other_port(:"app-4370@127.0.0.4", [:"app-4371@127.0.0.4", :"app-4370@127.0.0.2"])

      assert text =~ "DNS lists app-4371@127.0.0.4 on this node's host, port 4371, but this node"
      assert text =~ "is app-4370@127.0.0.4 and listens on 4370"
    end

    test "not when DNS lists this node, another host, or another name" do
      for found <- [
            [:"app-4370@127.0.0.4", :"app-4371@127.0.0.4"],
            [:"app-4371@127.0.0.2"],
            [:"web-4371@127.0.0.4"],
            [:"nonode-4371@nohost"]
          ] do
        assert NodeName.other_port(:"app-4370@127.0.0.4", found) == nil, inspect(found)
      end

      assert NodeName.other_port(:nonode@nohost, [:"nonode-4371@nohost"]) == nil
    end
  end
end
