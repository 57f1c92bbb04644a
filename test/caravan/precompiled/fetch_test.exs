defmodule Caravan.Precompiled.FetchTest do
  # Caravan.Precompiled.Fetch on its own: the transport rules against OTP's
  # httpd on loopback (plain and TLS with a certificate authority the OS
  # does not know), and local files. The whole path through `mix compile`
  # is in test/integration/mix_compile_caravan_native_test.exs.
  use ExUnit.Case, async: false

  alias Caravan.Precompiled.Fetch
  alias Caravan.Test.TlsCerts

  @moduletag :tmp_dir

  test "plain http is for loopback only" do
    assert {:error, message} = Fetch.fetch("a.tar.gz", {:url, "http://example.com/r"})
    assert message =~ "http://example.com/r/a.tar.gz is plain http"
    assert message =~ "https://"
    assert {:error, message} = Fetch.fetch("a.tar.gz", {:url, "ftp://127.0.0.1/r"})
    assert message =~ "not an http(s) URL"
  end

  test "https is verified: a server whose authority the OS does not trust is refused",
       %{tmp_dir: tmp} do
    www = Path.join(tmp, "www")
    File.mkdir_p!(www)
    File.write!(Path.join(www, "a.tar.gz"), "artifact")
    certs = TlsCerts.write(Path.join(tmp, "certs"), "https", ["127.0.0.1", "localhost"])
    pem = &String.to_charlist(Path.join([tmp, "certs", "https_" <> &1]))
    {:ok, _} = Application.ensure_all_started(:inets)
    {:ok, _} = Application.ensure_all_started(:ssl)

    {:ok, httpd} =
      :inets.start(:httpd,
        port: 0,
        bind_address: {127, 0, 0, 1},
        server_name: ~c"caravan-tls-test",
        server_root: String.to_charlist(tmp),
        document_root: String.to_charlist(www),
        socket_type: {:ssl, certfile: pem.("server_cert.pem"), keyfile: pem.("server_key.pem")}
      )

    on_exit(fn -> :inets.stop(:httpd, httpd) end)
    url = "https://localhost:#{:httpd.info(httpd)[:port]}"

    # Control: a client that trusts this authority gets the file, so the
    # refusal below is the trust check, not a broken server. Its kept-alive
    # connection is not reused by Caravan's fetch (a profile of its own).
    ssl = [
      verify: :verify_peer,
      cacertfile: String.to_charlist(certs.ca),
      customize_hostname_check: [match_fun: :public_key.pkix_verify_hostname_match_fun(:https)]
    ]

    assert {:ok, {{_, 200, _}, _, "artifact"}} =
             :httpc.request(:get, {~c"#{url}/a.tar.gz", []}, [ssl: ssl], body_format: :binary)

    # Refused: the OS's CA store does not hold this test authority.
    assert {:error, message} = Fetch.fetch("a.tar.gz", {:url, url})
    assert message =~ "GET #{url}/a.tar.gz failed"
    assert message =~ ~r/unknown_ca|Unknown CA/i
  end

  test "plain http on loopback and local files", %{tmp_dir: tmp} do
    www = Path.join(tmp, "www")
    File.mkdir_p!(www)
    File.write!(Path.join(www, "a.tar.gz"), "artifact")
    {:ok, _} = Application.ensure_all_started(:inets)

    {:ok, httpd} =
      :inets.start(:httpd,
        port: 0,
        bind_address: {127, 0, 0, 1},
        server_name: ~c"caravan-http-test",
        server_root: String.to_charlist(tmp),
        document_root: String.to_charlist(www)
      )

    on_exit(fn -> :inets.stop(:httpd, httpd) end)
    port = :httpd.info(httpd)[:port]
    assert Fetch.fetch("a.tar.gz", {:url, "http://127.0.0.1:#{port}/"}) == {:ok, "artifact"}
    assert Fetch.fetch("a.tar.gz", {:url, "http://localhost:#{port}"}) == {:ok, "artifact"}
    assert {:error, message} = Fetch.fetch("b.tar.gz", {:url, "http://127.0.0.1:#{port}"})
    assert message =~ "answered HTTP 404"

    assert Fetch.fetch("a.tar.gz", {:path, www}) == {:ok, "artifact"}
    assert Fetch.fetch("x", {:path, Path.join(www, "a.tar.gz")}) == {:ok, "artifact"}
    assert {:error, message} = Fetch.fetch("b.tar.gz", {:path, www})
    assert message =~ Path.join(www, "b.tar.gz")
  end
end
