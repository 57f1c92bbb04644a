defmodule Caravan.Epmd.ClientNodesTest do
  # Real nodes booted with Caravan's epmd flags (Caravan.Epmd.Client as
  # the -epmd_module); its callbacks called in-process are in
  # test/caravan/epmd/client_test.exs.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.BeamNode

  describe "real nodes with the flags" do
    test "listen on the port from the name, with a new random creation each start" do
      refute BeamNode.listening?({127, 0, 0, 5}, 4390)

      creations =
        for _ <- 1..2 do
          {peer, node} = BeamNode.start("app-4390", "127.0.0.5", {127, 0, 0, 5})
          on_exit(fn -> BeamNode.stop(peer) end)
          assert node == :"app-4390@127.0.0.5"
          assert BeamNode.listening?({127, 0, 0, 5}, 4390)
          assert BeamNode.call(peer, :net_adm, :names, []) == {:ok, [{~c"app-4390", 4390}]}
          creation = BeamNode.call(peer, :erlang, :system_info, [:creation])
          BeamNode.stop(peer)
          creation
        end

      # Caravan 1.x returned 1..3; net_kernel's random creation is 4..2^32-1.
      assert Enum.all?(creations, &(&1 > 3))
      assert Enum.uniq(creations) == creations
    end

    test "a release helper node listens on a random port, not its target's" do
      {target, _} = BeamNode.start("app-4391", "127.0.0.5", {127, 0, 0, 5})
      on_exit(fn -> BeamNode.stop(target) end)
      {helper, helper_node} = BeamNode.start("rem-1a2b-app-4391", "127.0.0.5", {127, 0, 0, 5})
      on_exit(fn -> BeamNode.stop(helper) end)

      assert {:ok, [{~c"rem-1a2b-app-4391", port}]} = BeamNode.call(helper, :net_adm, :names, [])
      assert port not in [0, 4391]
      assert BeamNode.call(helper, :net_kernel, :connect_node, [:"app-4391@127.0.0.5"])
      assert BeamNode.call(target, Node, :list, []) == [helper_node]
    end
  end
end
