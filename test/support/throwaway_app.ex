defmodule Caravan.Test.ThrowawayApp do
  @moduledoc """
  Builds a throwaway Mix project (`mix new`) that uses Caravan as a `path:`
  dependency, the way a user's app does. Caravan's sources are copied first,
  so nothing the throwaway build writes (`priv/`, `_build/`) lands in this
  checkout. No hex package is involved.
  """

  @root Path.expand("../..", __DIR__)

  @doc """
  Copies Caravan's sources (`mix.exs`, `Cargo.*`, `lib/`, `native/`) into
  `<dir>/caravan` and returns that path.

  Options: `:prebuilt_native` (default false): when true, also copies this
  checkout's built `priv/native/caravan_native.so`, last, so it is newer than
  the crate sources and the dependency's compiler does not run cargo. When
  false the copy has no library and its first `mix compile` builds it.
  """
  @spec copy_caravan(Path.t(), keyword()) :: Path.t()
  def copy_caravan(dir, opts \\ []) do
    caravan = Path.join(dir, "caravan")
    File.mkdir_p!(caravan)

    for entry <- ["mix.exs", "Cargo.toml", "Cargo.lock", "lib", "native"],
        do: File.cp_r!(Path.join(@root, entry), Path.join(caravan, entry))

    if opts[:prebuilt_native] do
      library = Path.join(@root, "priv/native/caravan_native.so")
      File.exists?(library) || raise "#{library} is missing: run MIX_ENV=test mix compile"
      File.mkdir_p!(Path.join(caravan, "priv/native"))
      File.cp!(library, Path.join(caravan, "priv/native/caravan_native.so"))
    end

    caravan
  end

  @doc """
  Generates `<dir>/<name>` with `mix new <name>` and adds
  `{:caravan, path: caravan}` to its deps. Returns the app's path.
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

    app
  end
end
