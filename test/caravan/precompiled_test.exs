defmodule Caravan.PrecompiledTest do
  # Caravan.Precompiled on its own: names, the checksum file, packing. The
  # fetch is in test/caravan/precompiled/fetch_test.exs; the whole path
  # through `mix compile` is in test/integration/mix_compile_caravan_native_test.exs.
  use ExUnit.Case, async: true

  alias Caravan.Precompiled

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
end
