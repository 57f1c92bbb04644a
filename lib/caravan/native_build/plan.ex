defmodule Caravan.NativeBuild.Plan do
  @moduledoc false
  # The compile task's choice of where Caravan's NIF library comes from: a
  # source build (forced, Caravan's own repository, or no precompiled
  # artifact for this target), a precompiled artifact from a configured path
  # or URL, or nowhere (a message listing the ways out). Reads the
  # environment, the application config and the checksum file; builds and
  # fetches nothing. Used by Mix.Tasks.Compile.CaravanNative.

  alias Caravan.NativeBuild.Cargo
  alias Caravan.Precompiled

  @crate "caravan_native"
  @checksum_file Precompiled.checksum_file()

  @doc """
  Where the library comes from for the project at `root` (a path):
  `{:source, why}` (build with cargo; `why` is printed),
  `{:precompiled, artifact_name, "sha256:<hex>", {:path, path} | {:url, base}}`,
  or `{:unavailable, message}` (the message names the ways out). The order
  is the compile task's moduledoc's.
  """
  @spec choose(Path.t()) ::
          {:source, String.t()}
          | {:precompiled, String.t(), String.t(), {:path, Path.t()} | {:url, String.t()}}
          | {:unavailable, String.t()}
  def choose(root) do
    cond do
      forced = force_build() ->
        {:source, forced}

      top_level?() ->
        {:source, "Caravan is the project being built"}

      true ->
        precompiled_plan(root)
    end
  end

  @doc """
  Whether Caravan is the project being built rather than a dependency.
  """
  # Mix gives a dependency's project an :app_path on some Elixir versions
  # (Mix.Dep.in_dependency/3, 1.14), and on every version a dependency is
  # built under its parent's build path, outside its own directory (seen
  # on Elixir 1.18, where :app_path is not set). (:build_scm is not a
  # test: it defaults to Mix.SCM.Path.)
  @spec top_level?() :: boolean()
  def top_level? do
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
      * a source build (needs cargo #{Cargo.rust_version!(File.cwd!())} or newer, https://rustup.rs):
          CARAVAN_BUILD=1                              or  config :caravan, build_from_source: true
    """
  end
end
