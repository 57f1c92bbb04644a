defmodule Caravan.Precompiled do
  @moduledoc false
  # What a precompiled NIF library is: the NIF version and target triple it
  # is built for, its artifact name, the checksum file, SHA-256
  # verification, packing and unpacking (fetching it is
  # Caravan.Precompiled.Fetch's job). Used by the compile task
  # (Mix.Tasks.Compile.CaravanNative) and the maintainer task
  # (Mix.Tasks.Caravan.Precompile); it runs at build time only.
  #
  # The contract is rustler_precompiled's (0.8), so that switching to that
  # package later changes the Mix side only:
  # - artifact: lib<crate>-v<version>-nif-<nif_version>-<target>.so.tar.gz, a
  #   gzipped tar holding one file, the same name without ".tar.gz";
  # - checksum file: checksum-<NIF module>.exs at the project root, an Elixir
  #   map %{artifact_name => "sha256:<lowercase hex>"}, shipped in the package;
  # - base URL: the artifact is fetched from "<base_url>/<artifact_name>".

  @nif_versions ["2.16"]
  @checksum_file "checksum-Elixir.Caravan.Native.exs"

  @typedoc "The checksum file's map: artifact name => `\"sha256:<64 lowercase hex digits>\"`."
  @type checksums :: %{optional(String.t()) => String.t()}

  @doc """
  The checksum file's name (`"checksum-Elixir.Caravan.Native.exs"`), at the
  project root and shipped in the package (rustler_precompiled's name).
  """
  @spec checksum_file() :: String.t()
  def checksum_file, do: @checksum_file

  @doc """
  The NIF version the library is built for: the highest of the crate's
  versions (rustler feature `nif_version_2_16`) not above the running VM's
  (`:erlang.system_info(:nif_version)`). A library built for 2.16 loads on
  any VM speaking 2.16 or newer (OTP 25+), as rustler_precompiled assumes.
  Returns `{:ok, "2.16"}` or `{:error, message}`.
  """
  @spec nif_version(String.t()) :: {:ok, String.t()} | {:error, String.t()}
  def nif_version(vm \\ to_string(:erlang.system_info(:nif_version))) do
    case Enum.filter(@nif_versions, &(version_tuple(&1) <= version_tuple(vm))) do
      [] ->
        {:error,
         "this VM speaks NIF #{vm}, Caravan's library needs NIF #{hd(@nif_versions)} " <>
           "or newer (Erlang/OTP 25+)"}

      versions ->
        {:ok, Enum.max_by(versions, &version_tuple/1)}
    end
  end

  defp version_tuple(text),
    do: text |> String.split(".") |> Enum.map(&String.to_integer/1) |> List.to_tuple()

  @doc """
  The Rust target triple of this VM (`"x86_64-unknown-linux-gnu"`), from
  `:erlang.system_info(:system_architecture)` (`"x86_64-pc-linux-gnu"`):
  Linux vendors become `unknown`, macOS versions are dropped
  (`"aarch64-apple-darwin23.1.0"` -> `"aarch64-apple-darwin"`). The same
  normalisation as rustler_precompiled's.
  """
  @spec target(String.t()) :: String.t()
  def target(arch \\ to_string(:erlang.system_info(:system_architecture))) do
    case String.split(arch, "-") do
      [cpu, _vendor, "linux", abi | _] -> "#{cpu(cpu)}-unknown-linux-#{abi}"
      [cpu, _vendor, "linux"] -> "#{cpu(cpu)}-unknown-linux-gnu"
      [cpu, "apple", "darwin" <> _ | _] -> "#{cpu(cpu)}-apple-darwin"
      _ -> arch
    end
  end

  defp cpu("arm64"), do: "aarch64"
  defp cpu("amd64"), do: "x86_64"
  defp cpu(cpu), do: cpu

  @doc """
  The artifact's file name:
  `lib<crate>-v<version>-nif-<nif_version>-<target>.so.tar.gz`.
  """
  @spec artifact_name(String.t(), String.t(), String.t(), String.t()) :: String.t()
  def artifact_name(crate, version, nif_version, target),
    do: "lib#{crate}-v#{version}-nif-#{nif_version}-#{target}.so.tar.gz"

  @doc """
  Reads the checksum file (`%{artifact_name => "sha256:<hex>"}`). A missing
  file is an empty map; a file that is not such a map raises `Mix.Error`
  naming the path.
  """
  @spec read_checksums(Path.t()) :: checksums()
  def read_checksums(path) do
    if File.exists?(path) do
      case Code.eval_file(path) do
        {map, _} when is_map(map) ->
          if Enum.all?(map, &valid_entry?/1), do: map, else: bad_checksum_file!(path)

        _ ->
          bad_checksum_file!(path)
      end
    else
      %{}
    end
  end

  defp valid_entry?({name, "sha256:" <> hex}) when is_binary(name),
    do: byte_size(hex) == 64 and hex =~ ~r/\A[0-9a-f]+\z/

  defp valid_entry?(_), do: false

  @spec bad_checksum_file!(Path.t()) :: no_return()
  defp bad_checksum_file!(path) do
    Mix.raise(
      "Caravan's checksum file #{path} is not a map of artifact names to " <>
        ~s("sha256:<64 lowercase hex digits>". Restore it from the package or regenerate ) <>
        "it with `mix caravan.precompile`."
    )
  end

  @doc "Writes the checksum map to `path`, sorted by artifact name, as Elixir source."
  @spec write_checksums(Path.t(), checksums()) :: :ok
  def write_checksums(path, map) do
    lines = for {name, sum} <- Enum.sort(map), do: "  #{inspect(name)} => #{inspect(sum)},\n"
    File.write!(path, ["%{\n", lines, "}\n"])
  end

  @doc ~s(The SHA-256 of `data` in the checksum file's form, `"sha256:<lowercase hex>"`.)
  @spec checksum(binary()) :: String.t()
  def checksum(data), do: "sha256:" <> Base.encode16(:crypto.hash(:sha256, data), case: :lower)

  @doc """
  Checks `data` against the expected checksum. Returns `:ok` or
  `{:error, message}` naming the artifact, the expected and the actual sum.
  """
  @spec verify(binary(), String.t(), String.t()) :: :ok | {:error, String.t()}
  def verify(data, name, expected) do
    case checksum(data) do
      ^expected ->
        :ok

      actual ->
        {:error,
         "the checksum of #{name} does not match: the package's checksum file says " <>
           "#{expected}, the file fetched has #{actual}. The file is corrupt or not the " <>
           "one released with this version; it was not installed."}
    end
  end

  @doc """
  Packs the library at `library` (a path) into the artifact `name`: a gzipped
  tar holding one file named `name` without `.tar.gz`. Returns the bytes.
  """
  @spec pack(Path.t(), String.t()) :: binary()
  def pack(library, name) do
    entry = String.to_charlist(Path.basename(name, ".tar.gz"))
    tmp = Path.join(System.tmp_dir!(), "caravan-pack-#{System.unique_integer([:positive])}")

    try do
      :ok =
        :erl_tar.create(String.to_charlist(tmp), [{entry, File.read!(library)}], [:compressed])

      File.read!(tmp)
    after
      File.rm(tmp)
    end
  end

  @doc """
  Unpacks the library from the artifact bytes. Returns `{:ok, library_bytes}`
  or `{:error, message}` when it is not a gzipped tar with one `.so` file.
  """
  @spec unpack(binary(), String.t()) :: {:ok, binary()} | {:error, String.t()}
  def unpack(data, name) do
    case :erl_tar.extract({:binary, data}, [:compressed, :memory]) do
      {:ok, [{_file, library}]} -> {:ok, library}
      {:ok, files} -> {:error, "#{name} holds #{length(files)} files, expected one library"}
      {:error, reason} -> {:error, "#{name} is not a gzipped tar: #{inspect(reason)}"}
    end
  end
end
