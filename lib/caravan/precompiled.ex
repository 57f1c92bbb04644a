defmodule Caravan.Precompiled do
  @moduledoc false
  # Precompiled NIF libraries: artifact names, the checksum file, fetching
  # (HTTP(S) with OTP's :httpc, or a local file or directory), SHA-256
  # verification, packing and unpacking. Used by the compile task
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
  @spec read_checksums(Path.t()) :: %{String.t() => String.t()}
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

  defp bad_checksum_file!(path) do
    Mix.raise(
      "Caravan's checksum file #{path} is not a map of artifact names to " <>
        ~s("sha256:<64 lowercase hex digits>". Restore it from the package or regenerate ) <>
        "it with `mix caravan.precompile`."
    )
  end

  @doc "Writes the checksum map to `path`, sorted by artifact name, as Elixir source."
  @spec write_checksums(Path.t(), %{String.t() => String.t()}) :: :ok
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

  @doc """
  Fetches the artifact `name` from a local path or a base URL.

  `{:path, path}`: `path` is the artifact file itself or a directory holding
  it. `{:url, base}`: GET `<base>/<name>` with `:httpc`; `https://` URLs are
  verified against the OS's CA store (`:public_key.cacerts_get/0`, OTP 25+;
  on older OTPs the first CA bundle found at the usual OS paths) with
  `verify_peer` and the HTTPS host-name check (RFC 6125); plain `http://` is
  accepted only for loopback hosts (`localhost`, 127.0.0.0/8, `::1`).
  `HTTPS_PROXY`/`HTTP_PROXY` (or lower case) are used for other hosts.
  Returns `{:ok, bytes}` or `{:error, message}` naming the path or URL.
  """
  @spec fetch(String.t(), {:path, Path.t()} | {:url, String.t()}) ::
          {:ok, binary()} | {:error, String.t()}
  def fetch(name, {:path, path}) do
    file = if File.dir?(path), do: Path.join(path, name), else: path

    case File.read(file) do
      {:ok, data} -> {:ok, data}
      {:error, reason} -> {:error, "cannot read #{file}: #{:file.format_error(reason)}"}
    end
  end

  def fetch(name, {:url, base}) do
    url = String.trim_trailing(base, "/") <> "/" <> name

    with {:ok, ssl} <- http_options(URI.parse(url)) do
      ensure_loadable([:crypto, :public_key, :ssl, :inets])
      {:ok, _} = Application.ensure_all_started(:inets)
      {:ok, _} = Application.ensure_all_started(:ssl)
      # A profile of our own: no connection kept alive by other :httpc users
      # of this VM (checked with other TLS options) is reused.
      {:ok, profile} = start_profile()
      :ok = :httpc.set_options(proxy_options(URI.parse(url)), profile)
      request = {String.to_charlist(url), [{~c"user-agent", ~c"caravan-compile"}]}
      options = [ssl: ssl, timeout: 120_000, connect_timeout: 15_000, autoredirect: true]

      try do
        case :httpc.request(:get, request, options, [body_format: :binary], profile) do
          {:ok, {{_, 200, _}, _headers, body}} -> {:ok, body}
          {:ok, {{_, status, _}, _, _}} -> {:error, "GET #{url} answered HTTP #{status}"}
          {:error, reason} -> {:error, "GET #{url} failed: #{inspect(reason)}"}
        end
      after
        :inets.stop(:httpc, profile)
      end
    end
  end

  defp start_profile do
    profile = :"caravan_precompiled_#{System.unique_integer([:positive])}"

    case :inets.start(:httpc, profile: profile) do
      {:ok, _pid} -> {:ok, profile}
      {:error, reason} -> {:error, "cannot start :httpc: #{inspect(reason)}"}
    end
  end

  # HTTPS_PROXY / HTTP_PROXY (or lower case), as curl reads them; never for
  # loopback hosts.
  defp proxy_options(%URI{scheme: scheme, host: host}) do
    var = if scheme == "https", do: "HTTPS_PROXY", else: "HTTP_PROXY"
    key = if scheme == "https", do: :https_proxy, else: :proxy

    with false <- loopback?(host),
         proxy when proxy not in [nil, ""] <-
           System.get_env(var) || System.get_env(String.downcase(var)),
         %URI{host: proxy_host, port: port} when is_binary(proxy_host) <- URI.parse(proxy) do
      [{key, {{String.to_charlist(proxy_host), port}, []}}]
    else
      _ -> []
    end
  end

  defp http_options(%URI{scheme: "https", host: host}) do
    with {:ok, cacerts} <- cacerts() do
      {:ok,
       [
         verify: :verify_peer,
         cacerts: cacerts,
         depth: 4,
         server_name_indication: String.to_charlist(host),
         customize_hostname_check: [
           match_fun: :public_key.pkix_verify_hostname_match_fun(:https)
         ]
       ]}
    end
  end

  defp http_options(%URI{scheme: "http", host: host} = uri) do
    if loopback?(host),
      do: {:ok, []},
      else:
        {:error,
         "#{URI.to_string(uri)} is plain http to a host that is not loopback; use an " <>
           "https:// base URL (verified against the OS's CA store) or a local directory"}
  end

  defp http_options(uri),
    do: {:error, "#{URI.to_string(uri)} is not an http(s) URL"}

  defp loopback?("localhost"), do: true

  defp loopback?(host) do
    case :inet.parse_address(String.to_charlist(String.trim(host, "[") |> String.trim("]"))) do
      {:ok, {127, _, _, _}} -> true
      {:ok, {0, 0, 0, 0, 0, 0, 0, 1}} -> true
      _ -> false
    end
  end

  @ca_bundles [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem"
  ]

  defp cacerts do
    if Code.ensure_loaded?(:public_key) and function_exported?(:public_key, :cacerts_get, 0) do
      {:ok, :public_key.cacerts_get()}
    else
      case Enum.find(@ca_bundles, &File.exists?/1) do
        nil ->
          {:error, "no CA certificates found (looked in #{Enum.join(@ca_bundles, ", ")})"}

        file ->
          pems = :public_key.pem_decode(File.read!(file))
          {:ok, for({:Certificate, der, _} <- pems, do: der)}
      end
    end
  rescue
    error -> {:error, "cannot read the OS's CA certificates: #{Exception.message(error)}"}
  end

  # Elixir 1.15+ prunes OTP applications that the project does not depend
  # on from Mix's code path; Mix.ensure_application!/1 (1.15+) puts them
  # back, as Mix does for its own :httpc use. On 1.14 they are there.
  defp ensure_loadable(apps) do
    if function_exported?(Mix, :ensure_application!, 1),
      do: Enum.each(apps, &apply(Mix, :ensure_application!, [&1]))

    :ok
  end
end
