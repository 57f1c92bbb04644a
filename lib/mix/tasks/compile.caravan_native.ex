defmodule Mix.Tasks.Compile.CaravanNative do
  @shortdoc "Installs Caravan's NIF library: precompiled, or built with cargo"
  @moduledoc """
  Installs Caravan's native library (the `caravan_native` crate) as
  `priv/native/caravan_native.so` under the application's build path
  (`_build/<env>/lib/caravan/priv`), where `Caravan.Native` loads it with
  `:code.priv_dir(:caravan)`. It runs as part of `mix compile` (listed in
  the project's `:compilers`), also when Caravan is a dependency. Nothing is
  written into Caravan's own directory (`deps/caravan` or a `path:` checkout).

  ## Precompiled first, source build on request

  The library comes from one of two places, decided in this order:

    1. **Source build** (`cargo build --release --locked`) when
       `CARAVAN_BUILD=1` (or `true`) is set, or
       `config :caravan, build_from_source: true`, or when Caravan is the
       project being built (its own repository: dev, test and CI build from
       source with no extra setting), or when the checksum file has no entry
       for this machine's target and NIF version (musl, macOS, ...).
       Cargo's target directory is `_build/caravan_native/default` (one per
       set of cargo features, shared by every `MIX_ENV`, so a prod build
       after a dev build reuses cargo's; `CARGO_TARGET_DIR` overrides it).
    2. **Precompiled** library otherwise, from `CARAVAN_PRECOMPILED_PATH` or
       `config :caravan, precompiled_path: ...` (the artifact file, or a
       directory holding it: air-gapped builds), else
       `CARAVAN_PRECOMPILED_URL` or `config :caravan, precompiled_url: ...`
       (a base URL; `<url>/<artifact>` is fetched with OTP's `:httpc`;
       https is verified against the OS's CA store, plain http is allowed
       for loopback only). The artifact's SHA-256 must equal the one in the
       package's `checksum-Elixir.Caravan.Native.exs`; a mismatch stops the
       build with both sums. With no location configured the task stops
       with a message listing the three ways out.

  Artifacts are named as rustler_precompiled names them:
  `libcaravan_native-v<version>-nif-2.16-<target>.so.tar.gz`, for example
  `libcaravan_native-v2.0.0-nif-2.16-x86_64-unknown-linux-gnu.so.tar.gz`.
  `mix caravan.precompile` makes one and updates the checksum file.

  The source build checks `cargo --version` first against the
  `rust-version` in Cargo.toml and names the version needed.

  The task reinstalls when the library is missing or differs from what it
  installed, when the choice above changes, and, for source builds, when a
  crate file (`native/**`, `Cargo.toml`, `Cargo.lock`) is newer; otherwise
  it returns `:noop`. `mix compile.caravan_native --force` reinstalls.

  Under `MIX_ENV=test`, or with `CARAVAN_TEST_HOOKS=1`, the crate is built
  with the cargo feature `test-hooks` (the test-only NIFs); a library built
  with other features is rebuilt.
  """
  use Mix.Task.Compiler

  alias Caravan.NativeBuild.{Cargo, Plan}
  alias Caravan.Precompiled

  @crate "caravan_native"
  @manifest "compile.caravan_native"

  @impl Mix.Task.Compiler
  def run(args) do
    {opts, _, _} = OptionParser.parse(args, switches: [force: :boolean])
    root = File.cwd!()
    output = output_path()
    plan = Plan.choose(root)
    clean_old_layout(root)

    if opts[:force] || stale?(plan, root, output) do
      library = execute(plan, root)
      install(library, output)
      write_manifest(plan_key(plan), library)
      {:ok, []}
    else
      :noop
    end
  end

  @impl Mix.Task.Compiler
  def manifests, do: [manifest_path()]

  @impl Mix.Task.Compiler
  def clean do
    # Either file may be missing already.
    _ = File.rm(output_path())
    _ = File.rm(manifest_path())
    :ok
  end

  defp output_path,
    do: Path.join([Mix.Project.app_path(), "priv", "native", @crate <> ".so"])

  defp manifest_path, do: Path.join(Mix.Project.manifest_path(), @manifest)

  defp plan_key({:source, _}), do: {:source, cargo_features()}
  defp plan_key({:precompiled, name, sum, _}), do: {:precompiled, name, sum}

  # -- staleness --------------------------------------------------------------

  defp stale?(plan, root, output) do
    with {:ok, %{key: key, sha256: sum}} <- read_manifest(),
         {:ok, installed} <- File.read(output),
         ^sum <- Precompiled.checksum(installed) do
      case plan do
        # Keep a good library rather than fail a compile that has nothing to do.
        {:unavailable, _} -> false
        {:source, _} -> key != plan_key(plan) or inputs_changed?(root)
        _ -> key != plan_key(plan)
      end
    else
      _ -> true
    end
  end

  defp read_manifest do
    with {:ok, data} <- File.read(manifest_path()) do
      {:ok, :erlang.binary_to_term(data)}
    end
  rescue
    ArgumentError -> :error
  end

  defp write_manifest(key, library) do
    File.mkdir_p!(Path.dirname(manifest_path()))
    sum = Precompiled.checksum(library)
    File.write!(manifest_path(), :erlang.term_to_binary(%{key: key, sha256: sum}))
  end

  defp inputs_changed?(root) do
    {:ok, %{mtime: built}} = File.stat(manifest_path(), time: :posix)

    (Path.wildcard(Path.join(root, "native/**/*.{rs,toml}")) ++
       Enum.map(["Cargo.toml", "Cargo.lock"], &Path.join(root, &1)))
    |> Enum.any?(fn path ->
      match?({:ok, %{mtime: mtime}} when mtime > built, File.stat(path, time: :posix))
    end)
  end

  # -- doing it ---------------------------------------------------------------

  defp execute({:unavailable, message}, _root), do: Mix.raise(message)

  defp execute({:source, why}, root) do
    Mix.shell().info("Compiling #{@crate} (cargo build --release; #{why})")
    File.read!(Cargo.build_library(root, cargo_features()))
  end

  defp execute({:precompiled, name, sum, location}, _root) do
    Mix.shell().info("Installing precompiled #{name} from #{describe(location)}")

    with {:ok, data} <- Precompiled.Fetch.fetch(name, location),
         :ok <- Precompiled.verify(data, name, sum),
         {:ok, library} <- Precompiled.unpack(data, name) do
      library
    else
      {:error, message} ->
        Mix.raise("""
        Caravan could not install its precompiled library: #{message}
        Check CARAVAN_PRECOMPILED_URL / CARAVAN_PRECOMPILED_PATH (or config :caravan, \
        precompiled_url / precompiled_path), or build from source with CARAVAN_BUILD=1.
        """)
    end
  end

  defp describe({:path, path}), do: path
  defp describe({:url, url}), do: url

  # The cargo features of the library this project loads: `test-hooks`
  # (the test-only NIFs) when test_hooks?/0, with `heap-count` (the
  # library's heap counted, for the load test) unless CARAVAN_HEAP_COUNT is
  # `0` or `false` (bench/run sets it: its nodes allocate as in
  # production). `mix caravan.precompile` builds with none. A change of
  # features reinstalls (plan_key/1).
  defp cargo_features do
    cond do
      not test_hooks?() -> []
      System.get_env("CARAVAN_HEAP_COUNT") in ["0", "false"] -> ["test-hooks"]
      true -> ["test-hooks", "heap-count"]
    end
  end

  @doc false
  # Whether the library is built with the cargo feature `test-hooks` and
  # Caravan.Native compiles the stubs of its test-only NIFs: true under
  # MIX_ENV=test or when CARAVAN_TEST_HOOKS is `1` or `true`. In a
  # dependency's compile Mix.env() is :prod, so users never get them.
  @spec test_hooks?() :: boolean()
  def test_hooks?,
    do: Mix.env() == :test or System.get_env("CARAVAN_TEST_HOOKS") in ["1", "true"]

  defp install(library, output) do
    # Until 2.0.0-dev the library was built into the source tree's priv/,
    # which Mix links as the build path's priv: never write through a link.
    priv = Path.join(Mix.Project.app_path(), "priv")
    if match?({:ok, _}, :file.read_link(priv)), do: File.rm!(priv)

    File.mkdir_p!(Path.dirname(output))
    # Write to a temporary name and rename, so a running VM that has the old
    # library mapped never sees a half-written file.
    tmp = output <> ".tmp"
    File.write!(tmp, library)
    File.rename!(tmp, output)
  end

  # Builds before 2.0.0 put the library in <source>/priv/native, which Mix
  # would copy over the installed one. It is build output: removed from
  # Caravan's own checkout; a dependency's directory is never written, so
  # the user is told.
  defp clean_old_layout(root) do
    old = Path.join(root, "priv/native")

    cond do
      not File.exists?(old) ->
        :ok

      Plan.top_level?() ->
        _ = File.rm_rf!(old)
        # rmdir removes priv/ only when nothing else is in it.
        _ = File.rmdir(Path.join(root, "priv"))
        :ok

      true ->
        Mix.shell().error(
          "warning: #{old} is left over from an older Caravan build; Mix copies it into " <>
            "the build path. Delete it (rm -r #{old}) and run mix compile again."
        )
    end
  end
end
