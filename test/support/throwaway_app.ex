defmodule Caravan.Test.ThrowawayApp do
  @moduledoc """
  Builds a throwaway Mix project (`mix new`) that uses Caravan as a `path:`
  dependency, the way a user's app does. The dependency is a copy of the
  files Caravan's hex package would hold (`package_files/1`), so nothing the
  throwaway build writes lands in this checkout, and a file the build needs
  but the package lacks makes the build fail. No hex package is involved.
  """

  alias Caravan.Precompiled

  @root Path.expand("../..", __DIR__)

  @doc """
  The files of Caravan's hex package, relative to `root`: the `package[:files]`
  entries of mix.exs expanded the way `mix hex.build` expands them (each
  entry joined to the root and wildcard-expanded, directories taken
  recursively, regular files only, duplicates dropped). Sorted.
  """
  @spec package_files(Path.t()) :: [Path.t()]
  def package_files(root \\ @root) do
    Mix.Project.config()[:app] == :caravan || raise "package_files/1 runs in Caravan's project"

    Mix.Project.config()[:package][:files]
    |> Enum.map(&Path.join(root, &1))
    |> Enum.flat_map(&Path.wildcard/1)
    |> Enum.flat_map(&if(File.dir?(&1), do: Path.wildcard(Path.join(&1, "**")), else: [&1]))
    |> Enum.filter(&File.regular?/1)
    |> Enum.uniq()
    |> Enum.map(&Path.relative_to(&1, root))
    |> Enum.sort()
  end

  @doc """
  Copies Caravan's package files (`package_files/1`) into `<dir>/caravan`
  and returns that path.

  Options: `:prebuilt_native` (default false): when true, the library this
  checkout's test build installed (`:code.priv_dir(:caravan)`) is packed as
  the precompiled artifact for this machine into `<dir>/precompiled`, and
  the copy's checksum file records it; `new/3` then points the app at that
  directory, so the dependency installs it and cargo does not run. When
  false the copy's checksum file is the checkout's.
  """
  @spec copy_caravan(Path.t(), keyword()) :: Path.t()
  def copy_caravan(dir, opts \\ []) do
    caravan = Path.join(dir, "caravan")

    for file <- package_files() do
      File.mkdir_p!(Path.dirname(Path.join(caravan, file)))
      File.cp!(Path.join(@root, file), Path.join(caravan, file))
    end

    if opts[:prebuilt_native], do: add_precompiled(dir, caravan)
    caravan
  end

  defp add_precompiled(dir, caravan) do
    library = Path.join(to_string(:code.priv_dir(:caravan)), "native/caravan_native.so")
    File.exists?(library) || raise "#{library} is missing: run MIX_ENV=test mix compile"
    {:ok, nif} = Precompiled.nif_version()
    version = Mix.Project.config()[:version]
    name = Precompiled.artifact_name("caravan_native", version, nif, Precompiled.target())
    data = Precompiled.pack(library, name)
    File.mkdir_p!(Path.join(dir, "precompiled"))
    File.write!(Path.join([dir, "precompiled", name]), data)

    Precompiled.write_checksums(
      Path.join(caravan, "checksum-Elixir.Caravan.Native.exs"),
      %{name => Precompiled.checksum(data)}
    )
  end

  @doc """
  The environment for `mix release` of an app made with `prebuilt_native:
  true`: `MIX_ENV=prod`, and `CARAVAN_TEST_HOOKS=1` because the packed
  library is this checkout's test build, which has the test-only NIFs
  (cargo feature `test-hooks`): `:erlang.load_nif/2` refuses a library
  with NIFs the module lacks, so the dependency's `Caravan.Native` must
  be compiled with their stubs too.
  """
  @spec release_env() :: [{String.t(), String.t()}]
  def release_env, do: [{"MIX_ENV", "prod"}, {"CARAVAN_TEST_HOOKS", "1"}]

  @doc """
  Generates `<dir>/<name>` with `mix new <name>` and adds
  `{:caravan, path: caravan}` to its deps. When `<dir>/precompiled` exists
  (`copy_caravan/2` with `prebuilt_native: true`), the app's
  `config/config.exs` sets `config :caravan, precompiled_path:` to it.
  Returns the app's path.
  """
  @spec new(Path.t(), String.t(), Path.t()) :: Path.t()
  def new(dir, name, caravan) do
    {out, 0} = System.cmd("mix", ["new", name], cd: dir, stderr_to_stdout: true)
    app = Path.join(dir, name)
    mix_exs = Path.join(app, "mix.exs")
    source = File.read!(mix_exs)
    marker = "[\n      # {:dep_from_hexpm"
    String.contains?(source, marker) || raise "unexpected mix new output: #{out}\n#{source}"

    File.write!(
      mix_exs,
      String.replace(
        source,
        marker,
        "[\n      {:caravan, path: #{inspect(caravan)}},\n      # {:dep_from_hexpm"
      )
    )

    precompiled = Path.join(dir, "precompiled")

    if File.dir?(precompiled) do
      File.mkdir_p!(Path.join(app, "config"))

      File.write!(
        Path.join(app, "config/config.exs"),
        "import Config\nconfig :caravan, precompiled_path: #{inspect(precompiled)}\n"
      )
    end

    app
  end
end
