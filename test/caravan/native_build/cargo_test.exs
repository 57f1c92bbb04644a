defmodule Caravan.NativeBuild.CargoTest do
  # Cargo's target directory is keyed by what changes the library (its
  # cargo features), not by MIX_ENV: a prod compile after a dev compile
  # finds cargo's build fresh. Not async: it switches Mix.env and the
  # environment.
  use ExUnit.Case, async: false

  alias Caravan.NativeBuild.Cargo

  setup do
    env = Mix.env()
    target = System.get_env("CARGO_TARGET_DIR")
    System.delete_env("CARGO_TARGET_DIR")

    on_exit(fn ->
      Mix.env(env)
      if target, do: System.put_env("CARGO_TARGET_DIR", target)
    end)
  end

  defp in_env(env, fun) do
    Mix.env(env)
    fun.()
  end

  test "one target directory for every MIX_ENV, under the build root" do
    dirs = for env <- [:dev, :test, :prod], do: in_env(env, fn -> Cargo.target_dir([]) end)
    assert [dir] = Enum.uniq(dirs)
    assert dir == Path.join(Path.dirname(Mix.Project.build_path()), "caravan_native/default")
  end

  test "one target directory per set of cargo features, in any order" do
    plain = Cargo.target_dir([])
    hooks = Cargo.target_dir(["test-hooks", "heap-count"])
    assert hooks != plain
    assert Cargo.target_dir(["heap-count", "test-hooks"]) == hooks
    assert Path.basename(hooks) == "heap-count+test-hooks"
  end

  test "CARGO_TARGET_DIR wins" do
    System.put_env("CARGO_TARGET_DIR", "/tmp/somewhere")
    on_exit(fn -> System.delete_env("CARGO_TARGET_DIR") end)
    assert Cargo.target_dir(["test-hooks"]) == "/tmp/somewhere"
  end
end
