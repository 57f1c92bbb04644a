defmodule Caravan.Integration.DnatLabTest do
  # Dynamic ports on a real network (Caravan.Test.DnatLab): two "client
  # hosts", two "containers" behind each, every container listening on 4370
  # inside and reached through a host port of its own (DNAT), DNS shaped as
  # Consul registers a Nomad service (host IP + host port). In each mode
  # (ports in names; names without ports, ports from SRV) the four nodes
  # form a full mesh, a release-style helper node (rpc-<hex>-<node>) inside
  # a container reaches its node, and nothing listens on 4369; with ports
  # from SRV a moved allocation rejoins within two polls and a node whose
  # record is gone is refused, naming the query.
  use ExUnit.Case, async: false

  alias Caravan.Test.{BeamNode, DnatLab, Lab}

  @moduletag :integration
  @moduletag timeout: 300_000

  if reason = Lab.unavailable_reason() do
    IO.puts("Caravan.Integration.DnatLabTest skipped: #{reason}")
    @moduletag skip: "the multi-host lab cannot run here: #{reason}"
  end

  @poll_ms 1_000

  defp lab(mode) do
    lab = DnatLab.start(mode)
    on_exit(fn -> DnatLab.stop(lab) end)
    for key <- DnatLab.keys(), do: DnatLab.start_strategy(lab, key, poll_interval: @poll_ms)
    assert BeamNode.eventually(fn -> DnatLab.mesh?(lab, DnatLab.keys()) end, 60_000)
    lab
  end

  # A helper node in container {1, 1} asks its node for its name, as
  # `bin/app rpc` does.
  defp assert_helper_reaches(lab) do
    target = DnatLab.node_of(lab, {1, 1})

    {out, 0} =
      DnatLab.helper(
        lab,
        {1, 1},
        ~s|io:format("got ~p~n", [rpc:call('#{target}', erlang, node, [], 10000)]), halt().|
      )

    assert out =~ "got '#{target}'"
  end

  test "port mapping, ports in names: full mesh, helper nodes, nothing on 4369" do
    lab = lab(:name)
    assert DnatLab.node_of(lab, {2, 2}) == :"app-20022@198.18.0.12"
    # Every node listens on 4370 inside its container.
    assert DnatLab.call(lab, {2, 2}, Caravan.Epmd.Client, :names, []) ==
             {:ok, [{~c"app-20022", 4370}]}

    assert_helper_reaches(lab)
    assert DnatLab.listening(lab, 4369) == []
  end

  test "names without ports, ports from SRV: full mesh, helpers, a move, a refusal" do
    lab = lab(:srv)
    assert DnatLab.node_of(lab, {2, 2}) == :"app@c22.node.dc1.consul"
    assert_helper_reaches(lab)
    assert DnatLab.listening(lab, 4369) == []

    # The allocation of {1, 2} moves to another host port, same name.
    DnatLab.set_listed(lab, DnatLab.keys())
    lab = DnatLab.move(lab, {1, 2}, 20_099)
    DnatLab.set_listed(lab, DnatLab.keys())
    moved = DnatLab.node_of(lab, {1, 2})
    started = System.monotonic_time(:millisecond)
    others = DnatLab.keys() -- [{1, 2}]

    assert BeamNode.eventually(
             fn -> Enum.all?(others, &(moved in DnatLab.call(lab, &1, Node, :list, []))) end,
             15_000
           )

    assert System.monotonic_time(:millisecond) - started < 2 * @poll_ms + 2_000

    # {2, 2}'s record is gone: once a poll has seen that, a connect to it is
    # refused, naming the query.
    DnatLab.set_listed(lab, DnatLab.keys() -- [{2, 2}])
    Process.sleep(2 * @poll_ms)

    assert {:error, {:no_srv_record, message}} =
             DnatLab.call(lab, {1, 1}, Caravan.Epmd.Client, :address_please, [
               ~c"app",
               ~c"c22.node.dc1.consul",
               :inet
             ])

    assert message =~ DnatLab.query()
  end
end
