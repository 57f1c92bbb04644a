defmodule Caravan.Precompiled.Fetch do
  @moduledoc false
  # Gets a precompiled artifact's bytes: from a local file or directory, or
  # over HTTP(S) with OTP's :httpc (TLS verified against the OS's CA store,
  # plain http for loopback only, HTTPS_PROXY/HTTP_PROXY honoured). Used by
  # the compile task (Mix.Tasks.Compile.CaravanNative) at build time only;
  # what the bytes must be (names, checksum) is Caravan.Precompiled's.

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
