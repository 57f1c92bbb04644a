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
       Cargo's target directory is `<build path>/native/target`
       (`_build/<env>/native/target`; `CARGO_TARGET_DIR` overrides it).
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

  alias Caravan.Precompiled

  @crate "caravan_native"
  @checksum_file "checksum-Elixir.Caravan.Native.exs"
  @manifest "compile.caravan_native"

  @impl Mix.Task.Compiler
  def run(args) do
    {opts, _, _} = OptionParser.parse(args, switches: [force: :boolean])
    root = File.cwd!()
    output = output_path()
    plan = plan(root)
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
    File.rm(output_path())
    File.rm(manifest_path())
    :ok
  end

  @doc false
  # The checksum file's name, at the project root (rustler_precompiled's).
  def checksum_file, do: @checksum_file

  defp output_path,
    do: Path.join([Mix.Project.app_path(), "priv", "native", @crate <> ".so"])

  defp manifest_path, do: Path.join(Mix.Project.manifest_path(), @manifest)

  # -- the choice -------------------------------------------------------------

  # {:source, why} | {:precompiled, artifact, checksum, location} |
  # {:unavailable, message}
  defp plan(root) do
    cond do
      forced = force_build() ->
        {:source, forced}

      top_level?() ->
        {:source, "Caravan is the project being built"}

      true ->
        precompiled_plan(root)
    end
  end

  # Whether Caravan is the project being built rather than a dependency.
  # Mix gives a dependency's project an :app_path on some Elixir versions
  # (Mix.Dep.in_dependency/3, 1.14), and on every version a dependency is
  # built under its parent's build path, outside its own directory (seen
  # on Elixir 1.18, where :app_path is not set). (:build_scm is not a
  # test: it defaults to Mix.SCM.Path.)
  defp top_level? do
    own_dir = Path.expand(Path.dirname(Mix.Project.project_file()))
    build = Path.expand(Mix.Project.build_path())

    Mix.Project.config()[:app_path] == nil and String.starts_with?(build, own_dir <> "/")
  end

  defp force_build do
    cond do
      System.get_env("CARAVAN_BUILD") in ["1", "true"] -> "CARAVAN_BUILD is set"
      Application.get_env(:caravan, :build_from_source) == true -> "build_from_source: true"
      true -> nil
    end
  end

  defp precompiled_plan(root) do
    version = Mix.Project.config()[:version]
    target = Precompiled.target()
    checksums = Precompiled.read_checksums(Path.join(root, @checksum_file))

    with {:ok, nif} <- Precompiled.nif_version(),
         name = Precompiled.artifact_name(@crate, version, nif, target),
         {:ok, sum} <- Map.fetch(checksums, name) do
      case location() do
        nil -> {:unavailable, no_location_message(name)}
        location -> {:precompiled, name, sum, location}
      end
    else
      {:error, message} -> {:unavailable, "Caravan cannot use its native library: #{message}."}
      :error -> {:source, "no precompiled library for #{target} in #{@checksum_file}"}
    end
  end

  defp location do
    cond do
      path = env_or_config("CARAVAN_PRECOMPILED_PATH", :precompiled_path) ->
        {:path, Path.expand(path)}

      url = env_or_config("CARAVAN_PRECOMPILED_URL", :precompiled_url) ->
        {:url, url}

      url = Mix.Project.config()[:caravan_native][:base_url] ->
        {:url, url}

      true ->
        nil
    end
  end

  defp env_or_config(var, key) do
    case System.get_env(var) do
      value when value not in [nil, ""] -> value
      _ -> Application.get_env(:caravan, key)
    end
  end

  defp no_location_message(name) do
    """
    Caravan needs its native library #{name} and does not know where to get it.
    Do one of these, then run mix compile again:
      * a precompiled library from a mirror or release page (https, checked against
        the package's #{@checksum_file}):
          CARAVAN_PRECOMPILED_URL=https://host/path    or  config :caravan, precompiled_url: "..."
      * a precompiled library from a local directory or file (air-gapped builds):
          CARAVAN_PRECOMPILED_PATH=/path/to/dir        or  config :caravan, precompiled_path: "..."
      * a source build (needs cargo #{rust_version!(File.cwd!())} or newer, https://rustup.rs):
          CARAVAN_BUILD=1                              or  config :caravan, build_from_source: true
    """
  end

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
    File.read!(build_library(root, cargo_features()))
  end

  defp execute({:precompiled, name, sum, location}, _root) do
    Mix.shell().info("Installing precompiled #{name} from #{describe(location)}")

    with {:ok, data} <- Precompiled.fetch(name, location),
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
  # (the test-only NIFs) when test_hooks?/0. `mix caravan.precompile`
  # builds with none. A change of features reinstalls (plan_key/1).
  defp cargo_features, do: if(test_hooks?(), do: ["test-hooks"], else: [])

  @doc false
  # Whether the library is built with the cargo feature `test-hooks` and
  # Caravan.Native compiles the stubs of its test-only NIFs: true under
  # MIX_ENV=test or when CARAVAN_TEST_HOOKS is `1` or `true`. In a
  # dependency's compile Mix.env() is :prod, so users never get them.
  @spec test_hooks?() :: boolean()
  def test_hooks?,
    do: Mix.env() == :test or System.get_env("CARAVAN_TEST_HOOKS") in ["1", "true"]

  @doc false
  # Builds the release library with `features` (a list of cargo feature
  # names) after checking cargo's version; returns the built file's path.
  # Shared with `mix caravan.precompile`.
  @spec build_library(Path.t(), [String.t()]) :: Path.t()
  def build_library(root, features) do
    cargo = cargo!(root)
    target_dir = target_dir()

    args =
      ["build", "--release", "--package", @crate, "--locked"] ++
        if(features == [], do: [], else: ["--features", Enum.join(features, ",")])

    env = [{"CARGO_TARGET_DIR", target_dir}]

    case System.cmd(cargo, args, cd: root, env: env, stderr_to_stdout: true, into: IO.stream()) do
      {_, 0} -> :ok
      {_, status} -> Mix.raise("cargo build of #{@crate} failed with exit status #{status}")
    end

    release = Path.join(target_dir, "release")

    Enum.find(
      Enum.map(["lib#{@crate}.so", "lib#{@crate}.dylib"], &Path.join(release, &1)),
      &File.exists?/1
    ) || Mix.raise("cargo reported success but no lib#{@crate} is in #{release}")
  end

  # Under Mix's build path, so a dependency's directory stays untouched.
  defp target_dir do
    case System.get_env("CARGO_TARGET_DIR") do
      dir when dir not in [nil, ""] -> Path.expand(dir)
      _ -> Path.join([Mix.Project.build_path(), "native", "target"])
    end
  end

  defp cargo!(root) do
    needed = rust_version!(root)

    cargo =
      System.find_executable("cargo") ||
        Mix.raise("""
        Caravan needs cargo #{needed} or newer to build its native library from source, \
        and cargo is not on the PATH.
        Install Rust (https://rustup.rs) and run mix compile again, or use a precompiled \
        library (CARAVAN_PRECOMPILED_URL or CARAVAN_PRECOMPILED_PATH, without CARAVAN_BUILD).
        """)

    {out, status} = System.cmd(cargo, ["--version"], cd: root, stderr_to_stdout: true)

    case Regex.run(~r/\Acargo (\d+)\.(\d+)\.(\d+)/, out) do
      [_ | parts] when status == 0 ->
        found = parts |> Enum.map(&String.to_integer/1) |> List.to_tuple()

        if found < version_tuple(needed) do
          Mix.raise("""
          Caravan needs cargo #{needed} or newer to build its native library (rust-version \
          in Caravan's Cargo.toml; its Cargo.lock and crates need it), and #{cargo} is \
          #{Enum.join(parts, ".")}.
          Update Rust (`rustup update stable`, https://rustup.rs) and run mix compile again, \
          or use a precompiled library (CARAVAN_PRECOMPILED_URL or CARAVAN_PRECOMPILED_PATH, \
          without CARAVAN_BUILD).
          """)
        end

        cargo

      _ ->
        Mix.raise(
          "Caravan could not tell cargo's version: `#{cargo} --version` exited with " <>
            "#{status} and printed #{inspect(out)}; expected \"cargo #{needed}.0 (...)\" or newer"
        )
    end
  end

  defp rust_version!(root) do
    file = Path.join(root, "Cargo.toml")

    case Regex.run(~r/^rust-version\s*=\s*"(\d+\.\d+(?:\.\d+)?)"/m, File.read!(file)) do
      [_, version] -> version
      nil -> Mix.raise("#{file} declares no rust-version under [workspace.package]")
    end
  end

  defp version_tuple(version) do
    [major, minor, patch] =
      (String.split(version, ".") ++ ["0"]) |> Enum.take(3) |> Enum.map(&String.to_integer/1)

    {major, minor, patch}
  end

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

      top_level?() ->
        File.rm_rf!(old)
        if File.ls(Path.join(root, "priv")) == {:ok, []}, do: File.rmdir(Path.join(root, "priv"))

      true ->
        Mix.shell().error(
          "warning: #{old} is left over from an older Caravan build; Mix copies it into " <>
            "the build path. Delete it (rm -r #{old}) and run mix compile again."
        )
    end
  end
end
