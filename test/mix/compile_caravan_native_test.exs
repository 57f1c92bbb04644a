defmodule Mix.Tasks.Compile.CaravanNativeTest do
  use ExUnit.Case, async: false

  alias Caravan.Test.ThrowawayApp

  @moduletag timeout: 600_000
  @root File.cwd!()

  test "a fresh library is not rebuilt" do
    assert File.exists?(Path.join(@root, "priv/native/caravan_native.so"))
    File.cd!(@root, fn -> assert Mix.Tasks.Compile.CaravanNative.run([]) == :noop end)
  end

  @tag :tmp_dir
  test "builds and loads when Caravan is a path dependency of another app", %{tmp_dir: tmp} do
    # A copy of Caravan's sources without any build output, so the compiler
    # must really run cargo inside the dependency. CARGO_TARGET_DIR points at
    # a directory of the test's own, sharing nothing with this checkout.
    caravan = ThrowawayApp.copy_caravan(tmp)
    refute File.exists?(Path.join(caravan, "priv/native/caravan_native.so"))
    app = ThrowawayApp.new(tmp, "throwaway", caravan)

    env = [{"MIX_ENV", "dev"}, {"CARGO_TARGET_DIR", Path.join(tmp, "target")}]
    {out, status} = System.cmd("mix", ["compile"], cd: app, env: env, stderr_to_stdout: true)
    assert status == 0, out
    assert out =~ "Compiling caravan_native (cargo build --release)"
    assert File.exists?(Path.join(caravan, "priv/native/caravan_native.so"))

    script = ~S"""
    IO.puts("port=#{Caravan.Epmd.dist_port(:"app-4834@example.net")}")
    IO.puts("lib=#{Caravan.Native.library_path()}")
    IO.puts("hooks=#{function_exported?(Caravan.Native, :floor, 0)}")
    """

    {out, status} =
      System.cmd("mix", ["run", "-e", script], cd: app, env: env, stderr_to_stdout: true)

    assert status == 0, out
    assert out =~ "port=4834"
    assert out =~ Path.join(app, "_build/dev/lib/caravan/priv/native/caravan_native")
    # A dev build has no test hooks, in the module or in the library:
    # load_nif refuses a library with a NIF the module lacks, so the load
    # above proves the library exports none of them either.
    assert out =~ "hooks=false"

    # A second compile does not run cargo again.
    {out, 0} = System.cmd("mix", ["compile"], cd: app, env: env, stderr_to_stdout: true)
    refute out =~ "cargo build"
  end
end
