defmodule Caravan.PrecompiledTest do
  # Caravan.Precompiled on its own: names, the checksum file, packing, and
  # the fetch's transport rules against OTP's httpd on loopback (plain and
  # TLS with a certificate authority the OS does not know). The whole path
  # through `mix compile` is in test/mix/compile_caravan_native_test.exs.
  use ExUnit.Case, async: false

  alias Caravan.Precompiled
  alias Caravan.Test.TlsCerts

  @moduletag :tmp_dir

  test "targets are rustler_precompiled's triples" do
    assert Precompiled.target("x86_64-pc-linux-gnu") == "x86_64-unknown-linux-gnu"
    assert Precompiled.target("aarch64-unknown-linux-gnu") == "aarch64-unknown-linux-gnu"
    assert Precompiled.target("x86_64-pc-linux-musl") == "x86_64-unknown-linux-musl"
    assert Precompiled.target("aarch64-apple-darwin23.1.0") == "aarch64-apple-darwin"
    assert Precompiled.target("arm64-apple-darwin22.0.0") == "aarch64-apple-darwin"
  end

  test "the NIF version is the crate's 2.16 on any VM speaking 2.16 or newer" do
    assert Precompiled.nif_version("2.16") == {:ok, "2.16"}
    assert Precompiled.nif_version("2.17") == {:ok, "2.16"}
    assert {:error, message} = Precompiled.nif_version("2.15")
    assert message =~ "NIF 2.15"
    assert message =~ "needs NIF 2.16"

    assert Precompiled.artifact_name(
             "caravan_native",
             "2.0.0",
             "2.16",
             "x86_64-unknown-linux-gnu"
           ) ==
             "libcaravan_native-v2.0.0-nif-2.16-x86_64-unknown-linux-gnu.so.tar.gz"
  end

  test "checksum file: written, read back, a bad one named", %{tmp_dir: tmp} do
    file = Path.join(tmp, "checksum-Elixir.Caravan.Native.exs")
    assert Precompiled.read_checksums(file) == %{}

    sums = %{
      "b.so.tar.gz" => Precompiled.checksum("b"),
      "a.so.tar.gz" => Precompiled.checksum("a")
    }

    Precompiled.write_checksums(file, sums)
    assert Precompiled.read_checksums(file) == sums
    # Sorted, one entry a line, as rustler_precompiled writes it.
    assert File.read!(file) =~ ~r/\A%\{\n  "a\.so\.tar\.gz" => "sha256:[0-9a-f]{64}",\n  "b/

    File.write!(file, ~s(%{"a.so.tar.gz" => "md5:0"}))
    error = assert_raise Mix.Error, fn -> Precompiled.read_checksums(file) end
    assert error.message =~ file
  end

  test "pack and unpack; a wrong sum names both", %{tmp_dir: tmp} do
    library = Path.join(tmp, "lib.so")
    File.write!(library, :crypto.strong_rand_bytes(10_000))
    name = "libcaravan_native-v2.0.0-nif-2.16-x86_64-unknown-linux-gnu.so.tar.gz"
    data = Precompiled.pack(library, name)
    assert {:ok, [{entry, _}]} = :erl_tar.extract({:binary, data}, [:compressed, :memory])
    assert to_string(entry) == Path.basename(name, ".tar.gz")
    assert Precompiled.unpack(data, name) == {:ok, File.read!(library)}
    assert {:error, _} = Precompiled.unpack("not a tar", name)

    assert Precompiled.verify(data, name, Precompiled.checksum(data)) == :ok
    other = Precompiled.checksum("other")
    assert {:error, message} = Precompiled.verify(data, name, other)
    assert message =~ other
    assert message =~ Precompiled.checksum(data)
  end

  test "plain http is for loopback only" do
    assert {:error, message} = Precompiled.fetch("a.tar.gz", {:url, "http://example.com/r"})
    assert message =~ "http://example.com/r/a.tar.gz is plain http"
    assert message =~ "https://"
    assert {:error, message} = Precompiled.fetch("a.tar.gz", {:url, "ftp://127.0.0.1/r"})
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
    assert {:error, message} = Precompiled.fetch("a.tar.gz", {:url, url})
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
    assert Precompiled.fetch("a.tar.gz", {:url, "http://127.0.0.1:#{port}/"}) == {:ok, "artifact"}
    assert Precompiled.fetch("a.tar.gz", {:url, "http://localhost:#{port}"}) == {:ok, "artifact"}
    assert {:error, message} = Precompiled.fetch("b.tar.gz", {:url, "http://127.0.0.1:#{port}"})
    assert message =~ "answered HTTP 404"

    assert Precompiled.fetch("a.tar.gz", {:path, www}) == {:ok, "artifact"}
    assert Precompiled.fetch("x", {:path, Path.join(www, "a.tar.gz")}) == {:ok, "artifact"}
    assert {:error, message} = Precompiled.fetch("b.tar.gz", {:path, www})
    assert message =~ Path.join(www, "b.tar.gz")
  end
end
