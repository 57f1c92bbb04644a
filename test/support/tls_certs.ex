defmodule Caravan.Test.TlsCerts do
  @moduledoc """
  Certificates for TLS distribution (`-proto_dist inet_tls`), made by the
  test with OTP's `:public_key.pkix_test_data/1` and written as PEM files,
  plus the `-ssl_dist_optfile` that points at them.

  Each call makes a new certificate authority (one root for the server
  role, one for the client role): nodes given the same authority trust each
  other; a node with another authority's certificate is not trusted.
  """

  # subjectAltName (RFC 5280, 4.2.1.6).
  @subject_alt_name {2, 5, 29, 17}

  @doc """
  Writes `<dir>/<tag>_*.pem` and `<dir>/<tag>_ssl_dist.conf` and returns
  `%{optfile: path, ca: path}`.

  `hosts` are the host parts of the node names that will use the
  certificates (names and IPv4/IPv6 literals): each goes into the
  certificates' subjectAltName, since TLS distribution checks the peer's
  certificate against the host of its node name. Options: `:trust`, more
  CA files (paths) to trust besides this authority's own.

  Both roles verify the peer (`verify_peer`, and the server requires a
  client certificate), as the README's example does.
  """
  @spec write(Path.t(), String.t(), [String.t()], keyword()) :: %{optfile: Path.t(), ca: Path.t()}
  def write(dir, tag, hosts, opts \\ []) do
    File.mkdir_p!(dir)
    key = {:namedCurve, :secp256r1}
    san = {:Extension, @subject_alt_name, false, Enum.flat_map(hosts, &alt_names/1)}
    # SHA-256 signatures: OTP 27+ TLS refuses certificates signed with SHA-1
    # (pkix_test_data's default), with no_suitable_signature_algorithm.
    chain = %{
      root: [key: key, digest: :sha256],
      intermediates: [],
      peer: [key: key, digest: :sha256, extensions: [san]]
    }

    data = :public_key.pkix_test_data(%{server_chain: chain, client_chain: chain})
    path = fn name -> Path.join(dir, "#{tag}_#{name}") end

    for {role, config} <- [server: data.server_config, client: data.client_config] do
      File.write!(path.("#{role}_cert.pem"), pem([{:Certificate, config[:cert]}]))
      {key_type, key_der} = config[:key]
      File.write!(path.("#{role}_key.pem"), pem([{key_type, key_der}]))
    end

    roots = Enum.uniq(data.server_config[:cacerts] ++ data.client_config[:cacerts])
    extra = Enum.map_join(Keyword.get(opts, :trust, []), &File.read!/1)
    File.write!(path.("ca.pem"), pem(for root <- roots, do: {:Certificate, root}) <> extra)
    own_ca = path.("own_ca.pem")
    File.write!(own_ca, pem(for root <- roots, do: {:Certificate, root}))

    file = &String.to_charlist(path.(&1))

    optfile = [
      server: [
        certfile: file.("server_cert.pem"),
        keyfile: file.("server_key.pem"),
        cacertfile: file.("ca.pem"),
        verify: :verify_peer,
        fail_if_no_peer_cert: true,
        secure_renegotiate: true
      ],
      client: [
        certfile: file.("client_cert.pem"),
        keyfile: file.("client_key.pem"),
        cacertfile: file.("ca.pem"),
        verify: :verify_peer,
        secure_renegotiate: true
      ]
    ]

    File.write!(path.("ssl_dist.conf"), :io_lib.format(~c"~p.~n", [optfile]))
    %{optfile: path.("ssl_dist.conf"), ca: own_ca}
  end

  @doc "erl arguments for TLS distribution with `optfile`."
  @spec erl_args(Path.t()) :: [String.t()]
  def erl_args(optfile), do: ["-proto_dist", "inet_tls", "-ssl_dist_optfile", optfile]

  defp pem(entries),
    do: :public_key.pem_encode(for {type, der} <- entries, do: {type, der, :not_encrypted})

  defp alt_names(host) do
    case :inet.parse_address(String.to_charlist(host)) do
      {:ok, {_, _, _, _} = ip} -> [{:iPAddress, ip |> Tuple.to_list() |> :binary.list_to_bin()}]
      {:ok, ip} -> [{:iPAddress, for(part <- Tuple.to_list(ip), into: <<>>, do: <<part::16>>)}]
      {:error, _} -> [{:dNSName, String.to_charlist(host)}]
    end
  end
end
