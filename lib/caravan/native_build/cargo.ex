defmodule Caravan.NativeBuild.Cargo do
  @moduledoc false
  # Builds Caravan's NIF crate with cargo: finds cargo, checks its version
  # against Cargo.toml's rust-version, runs the release build into a target
  # directory under Mix's build root, one per set of cargo features and
  # shared by every MIX_ENV (CARGO_TARGET_DIR overrides it), and returns the
  # built library's path. Build time only; used by the compile
  # task and by mix caravan.precompile.

  @crate "caravan_native"

  @doc """
  Builds the release library (`cargo build --release --locked`) in `root`
  with `features` (a list of cargo feature names) after checking cargo's
  version against Cargo.toml's `rust-version`; returns the built file's
  path. Raises `Mix.Error` naming the version needed, the exit status, or
  the missing file. Shared by the compile task and `mix caravan.precompile`.
  """
  @spec build_library(Path.t(), [String.t()]) :: Path.t()
  def build_library(root, features) do
    cargo = cargo!(root)
    target_dir = target_dir(features)

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

  @doc """
  Cargo's target directory for a release build with `features` (cargo
  feature names): `CARGO_TARGET_DIR` when set, else
  `<build root>/caravan_native/<features>` (`_build/caravan_native/default`
  with none, `_build/caravan_native/heap-count+test-hooks`), under which
  cargo keeps one directory per profile. Keyed by what changes the library
  (the features; cargo keys the profile), not by `MIX_ENV`, so `MIX_ENV=prod
  mix compile` after `mix compile` finds cargo's build fresh. Outside
  Caravan's own directory when it is a dependency.
  """
  @spec target_dir([String.t()]) :: Path.t()
  def target_dir(features) do
    case System.get_env("CARGO_TARGET_DIR") do
      dir when dir not in [nil, ""] ->
        Path.expand(dir)

      _ ->
        key = if features == [], do: "default", else: Enum.join(Enum.sort(features), "+")
        # MIX_BUILD_PATH is one env's directory already, with no root above it.
        build = Mix.Project.build_path()

        root =
          if System.get_env("MIX_BUILD_PATH") in [nil, ""], do: Path.dirname(build), else: build

        Path.join([root, "caravan_native", key])
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

  @doc """
  The `rust-version` (`"1.70"`) declared in `root`'s Cargo.toml; raises
  `Mix.Error` naming the file when there is none.
  """
  @spec rust_version!(Path.t()) :: String.t()
  def rust_version!(root) do
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
end
