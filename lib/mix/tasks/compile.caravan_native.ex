defmodule Mix.Tasks.Compile.CaravanNative do
  @shortdoc "Builds Caravan's Rust NIF with cargo"
  @moduledoc """
  Builds the `caravan_native` crate with `cargo build --release` and copies
  the library to `priv/native/caravan_native.so`, where `Caravan.Native`
  loads it with `:erlang.load_nif/2`.

  It runs as part of `mix compile` (listed in the project's `:compilers`),
  also when Caravan is a dependency of another project. Cargo runs only when
  a file of the crates (`native/**`, `Cargo.toml`, `Cargo.lock`) is newer
  than the built library; otherwise the task returns `:noop`.

  Cargo must be on the `PATH` (Rust 1.91 or newer). Honours
  `CARGO_TARGET_DIR`. `mix compile.caravan_native --force` rebuilds.

  Under `MIX_ENV=test`, or with `CARAVAN_TEST_HOOKS=1`, the crate is built
  with the cargo feature `test-hooks` (the test-only NIFs, see
  `CARAVAN_TEST_HOOKS`); a library built with other features is rebuilt.
  """
  use Mix.Task.Compiler

  @crate "caravan_native"

  @impl Mix.Task.Compiler
  def run(args) do
    {opts, _, _} = OptionParser.parse(args, switches: [force: :boolean])
    root = File.cwd!()
    output = output_path(root)

    if opts[:force] || stale?(root, output) do
      build(root, output)
    else
      :noop
    end
  end

  @impl Mix.Task.Compiler
  def clean do
    File.rm(output_path(File.cwd!()))
    File.rm(stamp_path(output_path(File.cwd!())))
    :ok
  end

  @doc false
  # Whether the library is built with the cargo feature `test-hooks` and
  # Caravan.Native compiles the stubs of its test-only NIFs: true under
  # MIX_ENV=test or when CARAVAN_TEST_HOOKS is `1` or `true`.
  @spec test_hooks?() :: boolean()
  def test_hooks?,
    do: Mix.env() == :test or System.get_env("CARAVAN_TEST_HOOKS") in ["1", "true"]

  defp features, do: if(test_hooks?(), do: ["test-hooks"], else: [])

  # The features the library in priv/native was built with.
  defp stamp_path(output), do: output <> ".features"
  defp stamp, do: Enum.join(features(), ",")

  defp output_path(root), do: Path.join([root, "priv", "native", @crate <> ".so"])

  defp stale?(root, output) do
    case File.stat(output, time: :posix) do
      {:ok, %{mtime: built}} ->
        File.read(stamp_path(output)) != {:ok, stamp()} or
          Enum.any?(inputs(root), &newer_than?(&1, built))

      {:error, _} ->
        true
    end
  end

  defp inputs(root) do
    Path.wildcard(Path.join(root, "native/**/*.{rs,toml}")) ++
      Enum.map(["Cargo.toml", "Cargo.lock"], &Path.join(root, &1))
  end

  defp newer_than?(path, built) do
    case File.stat(path, time: :posix) do
      {:ok, %{mtime: mtime}} -> mtime > built
      {:error, _} -> false
    end
  end

  defp build(root, output) do
    cargo =
      System.find_executable("cargo") ||
        Mix.raise("""
        Caravan needs cargo to build its native library, and cargo is not on the PATH.
        Install the Rust toolchain (https://rustup.rs, Rust 1.91+) and run mix compile again.
        """)

    Mix.shell().info("Compiling caravan_native (cargo build --release)")

    args =
      ["build", "--release", "--package", @crate, "--locked"] ++
        Enum.flat_map(features(), &["--features", &1])

    case System.cmd(cargo, args, cd: root, stderr_to_stdout: true, into: IO.stream()) do
      {_, 0} -> install(root, output)
      {_, status} -> Mix.raise("cargo build of #{@crate} failed with exit status #{status}")
    end
  end

  defp install(root, output) do
    target_dir = System.get_env("CARGO_TARGET_DIR") || Path.join(root, "target")
    release = Path.join(target_dir, "release")

    built =
      Enum.find(
        Enum.map(["lib#{@crate}.so", "lib#{@crate}.dylib"], &Path.join(release, &1)),
        &File.exists?/1
      ) || Mix.raise("cargo reported success but no lib#{@crate} is in #{release}")

    File.mkdir_p!(Path.dirname(output))
    # Copy to a temporary name and rename, so a running VM that has the old
    # library mapped never sees a half-written file.
    tmp = output <> ".tmp"
    File.cp!(built, tmp)
    File.rename!(tmp, output)
    File.write!(stamp_path(output), stamp())
    # Re-link or re-copy priv/ into _build (a copy when build_embedded is set).
    Mix.Project.build_structure()
    {:ok, []}
  end
end
