defmodule Mix.Tasks.Caravan.Precompile do
  @shortdoc "Builds Caravan's precompiled NIF library for this machine and records its checksum"
  @moduledoc """
  Maintainer task: builds the release library for this machine's target
  (`cargo build --release --locked`, no test features), packs it as the
  artifact the compile task fetches, and writes or updates its entry in the
  checksum file shipped in the package (`checksum-Elixir.Caravan.Native.exs`,
  other targets' entries are kept).

      mix caravan.precompile [--output DIR]

  `--output` is where the artifact is written (default
  `<build path>/precompiled`, e.g. `_build/dev/precompiled`). The artifact
  is named `libcaravan_native-v<version>-nif-<nif>-<target>.so.tar.gz`
  (rustler_precompiled's scheme), with the version from mix.exs. Run it on
  each target to publish (x86_64 and aarch64 glibc Linux), upload the
  artifacts to the release's base URL and commit the checksum file before
  `mix hex.publish`. Needs cargo (the `rust-version` of Cargo.toml).
  """
  use Mix.Task

  alias Caravan.NativeBuild.Cargo
  alias Caravan.Precompiled

  @impl Mix.Task
  def run(args) do
    {opts, _, _} = OptionParser.parse(args, strict: [output: :string])
    root = File.cwd!()
    output = Path.expand(opts[:output] || Path.join(Mix.Project.build_path(), "precompiled"))

    nif =
      case Precompiled.nif_version() do
        {:ok, nif} -> nif
        {:error, message} -> Mix.raise(message)
      end

    target = Precompiled.target()

    name =
      Precompiled.artifact_name("caravan_native", Mix.Project.config()[:version], nif, target)

    library = Cargo.build_library(root, [])
    data = Precompiled.pack(library, name)
    File.mkdir_p!(output)
    artifact = Path.join(output, name)
    File.write!(artifact, data)

    sum = Precompiled.checksum(data)
    checksum_file = Path.join(root, Precompiled.checksum_file())
    checksums = Precompiled.read_checksums(checksum_file)
    Precompiled.write_checksums(checksum_file, Map.put(checksums, name, sum))

    Mix.shell().info("""
    #{artifact} (#{byte_size(data)} bytes)
    #{sum} recorded in #{checksum_file}\
    """)
  end
end
