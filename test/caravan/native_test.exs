defmodule Caravan.NativeTest do
  # The NIF module's own safety, with no server: a panic in a NIF call is an
  # ErlangError and the NIF carries on; a stub with no NIF behind it raises
  # at once. Panics in runtime tasks, load and memory are in
  # test/integration/nif_safety_test.exs.
  use ExUnit.Case, async: true

  describe "a panic in Rust becomes an Elixir error" do
    test "in the NIF call itself: an ErlangError, and the VM and the NIF carry on" do
      error = assert_raise ErlangError, fn -> Caravan.Native.__panic__(:nif) end
      assert error.original == :nif_panicked
      assert Caravan.Epmd.dist_port(:"app-4800@h") == 4800
    end

    test "an unknown place is a badarg, not a panic" do
      assert_raise ArgumentError, fn -> Caravan.Native.__panic__(:elsewhere) end
    end
  end

  test "a stub with no NIF behind it raises :nif_not_loaded at once instead of looping" do
    # __no_nif__/0 is a stub (test builds only) whose NIF no library has:
    # the loaded library's NIFs replace every other stub, not this one. The
    # old stubs loaded the library and called themselves again, forever.
    task =
      Task.async(fn ->
        try do
          Caravan.Native.__no_nif__()
        catch
          :error, error -> {:raised, error}
        end
      end)

    case Task.yield(task, 5_000) || Task.shutdown(task, :brutal_kill) do
      {:ok, result} -> assert result == {:raised, :nif_not_loaded}
      nil -> flunk("Caravan.Native.__no_nif__/0 still runs after 5 s: the stub loops")
    end

    # The real NIFs are untouched, and the stub raises again, as promptly.
    assert Caravan.Epmd.dist_port(:"app-4800@h") == 4800
    assert_raise ErlangError, ~r/nif_not_loaded/, fn -> Caravan.Native.__no_nif__() end
  end
end
