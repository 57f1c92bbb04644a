defmodule Mix.Tasks.Compile.CaravanNativeTest do
  # The compile task as a user meets it: throwaway apps whose Caravan
  # dependency is a copy of the hex package's files (ThrowawayApp).
  #
  # One cargo build serves every test: the source build of "srcapp"
  # (CARAVAN_BUILD=1), whose target directory `mix caravan.precompile` then
  # reuses (cargo finds it fresh) to pack the artifact and write the
  # checksum file. The other apps have no cargo on their PATH and install
  # that artifact from an HTTP server on loopback (OTP's :httpd, started
  # here) or from a local directory or file.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Precompiled
  alias Caravan.Test.ThrowawayApp

  @moduletag timeout: 1_200_000
  @root File.cwd!()
  @checksum_file "checksum-Elixir.Caravan.Native.exs"

  test "a fresh library is not rebuilt" do
    assert File.exists?(
             Path.join(to_string(:code.priv_dir(:caravan)), "native/caravan_native.so")
           )

    File.cd!(@root, fn -> assert Mix.Tasks.Compile.CaravanNative.run([]) == :noop end)
  end

  test "the package holds what a build needs and no build output" do
    files = ThrowawayApp.package_files()

    for file <- files do
      refute file =~ ~r{(^|/)(target|_build|deps)/}, "build output in the package: #{file}"
      refute file =~ ~r{(^|/)priv/}, "priv/ in the package: #{file}"
      refute file =~ ~r{\.(so|dylib|tar\.gz)$}, "a binary in the package: #{file}"
    end

    needed =
      ["mix.exs", "Cargo.toml", "Cargo.lock", @checksum_file] ++
        ["README.md", "LICENSE", "CHANGELOG.md"] ++
        git_files(["lib", "native/caravan_core/src", "native/caravan_native/src"]) ++
        ["native/caravan_core/Cargo.toml", "native/caravan_native/Cargo.toml"]

    assert needed -- files == []
    # The crates' tests, the fuzz crate, test/ and bench/ stay out.
    assert Enum.filter(files, &(&1 =~ ~r{^(test|bench|fuzz|native/[^/]+/tests)/})) == []
    # The checksum file that ships parses as one.
    assert is_map(Precompiled.read_checksums(Path.join(@root, @checksum_file)))
  end

  setup_all :build_once

  describe "a dependency" do
    test "CARAVAN_BUILD=1 builds from source into the build directory, the dependency's directory unchanged",
         ctx do
      %{src_app: app, src_out: out, src_before: before, src_after: after_build} = ctx
      assert out =~ "Compiling caravan_native (cargo build --release; CARAVAN_BUILD is set)"

      assert File.regular?(
               Path.join(app, "_build/caravan_native/default/release/libcaravan_native.so")
             )

      assert File.regular?(installed(app))
      # Same files, same bytes: no target/, no priv/, no checksum change.
      assert after_build == before

      {out, status} = mix(app, ["run", "-e", probe_script()], [])
      assert status == 0, out
      assert out =~ "port=4834"
      assert out =~ "lib=" <> Path.join(app, "_build/dev/lib/caravan/priv/native/caravan_native")
      # A dev build has no test hooks, in the module or in the library:
      # load_nif refuses a library with a NIF the module lacks, so the load
      # above proves the library exports none of them either.
      assert out =~ "hooks=false"
    end

    test "MIX_ENV=prod after dev reuses cargo's build: the crate is not built again", ctx do
      {out, status} = mix(ctx.src_app, ["compile"], MIX_ENV: "prod", CARAVAN_BUILD: "1")
      assert status == 0, out
      assert out =~ "Compiling caravan_native (cargo build --release; CARAVAN_BUILD is set)"
      refute out =~ ~r/Compiling caravan_(core|native) v/
      prod = Path.join(ctx.src_app, "_build/prod/lib/caravan/priv/native/caravan_native.so")
      assert File.read!(prod) == File.read!(installed(ctx.src_app))
    end

    test "mix caravan.precompile packs the library and records its checksum", ctx do
      %{artifact: artifact, checksums: checksums, src_app: app, maint_out: out} = ctx
      data = File.read!(artifact)
      # Run in Caravan's own directory, the compile before it builds from
      # source with no setting (Caravan is the project, not a dependency).
      assert out =~
               "Compiling caravan_native (cargo build --release; Caravan is the project being built)"

      assert out =~ "#{Precompiled.checksum(data)} recorded in"

      assert Path.basename(artifact) ==
               "libcaravan_native-v#{Mix.Project.config()[:version]}-nif-2.16-" <>
                 Precompiled.target() <> ".so.tar.gz"

      assert checksums == %{Path.basename(artifact) => Precompiled.checksum(data)}
      # The artifact is the library cargo built (the shared target dir).
      assert {:ok, library} = Precompiled.unpack(data, "artifact")
      assert library == File.read!(installed(app))
    end

    test "with no cargo: installs from an HTTP server on loopback and boots a node", ctx do
      %{user_app: app, artifact: artifact} = ctx
      {:ok, httpd} = start_httpd(ctx)
      on_exit(fn -> :inets.stop(:httpd, httpd) end)
      url = "http://127.0.0.1:#{:httpd.info(httpd)[:port]}/releases"
      File.rm_rf!(installed(app))

      {out, status} =
        mix(app, ["deps.compile", "caravan"], no_cargo(ctx, CARAVAN_PRECOMPILED_URL: url))

      assert status == 0, out
      assert out =~ "Installing precompiled #{Path.basename(artifact)} from #{url}"
      refute out =~ "cargo"
      assert File.read!(installed(app)) == unpacked(artifact)

      # A node boots on it: the epmd module loads the library from the app's
      # build path and the node listens on the port from its name.
      {out, status} = boot(app)
      assert status == 0, out
      assert out =~ "node=app-4871@127.0.0.1 listening=4871"
      assert out =~ "lib=" <> Path.join(app, "_build/dev/lib/caravan/priv/native/caravan_native")
      # Nothing was written into the dependency's directory.
      assert snapshot(ctx.user_dep) == ctx.user_dep_before
    end

    test "with no cargo: installs from a local directory or file", ctx do
      %{user_app: app, artifact: artifact} = ctx

      for path <- [Path.dirname(artifact), artifact] do
        File.rm_rf!(installed(app))

        {out, status} =
          mix(app, ["deps.compile", "caravan"], no_cargo(ctx, CARAVAN_PRECOMPILED_PATH: path))

        assert status == 0, out
        assert out =~ "Installing precompiled #{Path.basename(artifact)} from #{path}"
        assert File.read!(installed(app)) == unpacked(artifact)
      end

      # Installed and unchanged: nothing to do.
      {out, 0} =
        mix(app, ["deps.compile", "caravan"], no_cargo(ctx, CARAVAN_PRECOMPILED_PATH: artifact))

      refute out =~ "Installing precompiled"
    end

    test "a corrupted artifact is refused, naming both sums", ctx do
      %{user_app: app, artifact: artifact, checksums: checksums, tmp: tmp} = ctx
      bad_dir = Path.join(tmp, "corrupt")
      File.mkdir_p!(bad_dir)
      data = File.read!(artifact)
      # One byte flipped in the middle of the compressed library.
      at = div(byte_size(data), 2)
      # binary_part/3, not a size(at) pattern: Elixir 1.20 wants ^at there,
      # which 1.14 does not take.
      <<byte>> = binary_part(data, at, 1)

      bad =
        binary_part(data, 0, at) <>
          <<Bitwise.bxor(byte, 0xFF)>> <> binary_part(data, at + 1, byte_size(data) - at - 1)

      File.write!(Path.join(bad_dir, Path.basename(artifact)), bad)
      File.rm_rf!(installed(app))

      {out, status} =
        mix(app, ["deps.compile", "caravan"], no_cargo(ctx, CARAVAN_PRECOMPILED_PATH: bad_dir))

      assert status != 0, out
      assert out =~ "does not match"
      assert out =~ checksums[Path.basename(artifact)]
      assert out =~ Precompiled.checksum(bad)
      refute File.exists?(installed(app))
    end

    test "with neither a precompiled location nor a source build: one message says what to do",
         ctx do
      %{user_app: app} = ctx
      File.rm_rf!(installed(app))
      {out, status} = mix(app, ["deps.compile", "caravan"], no_cargo(ctx, []))
      assert status != 0, out
      assert out =~ "Caravan needs its native library"
      assert out =~ "CARAVAN_PRECOMPILED_URL"
      assert out =~ "CARAVAN_PRECOMPILED_PATH"
      assert out =~ "CARAVAN_BUILD=1"
      refute File.exists?(installed(app))
    end

    test "a too-old cargo gets Caravan's message naming the version needed", ctx do
      %{user_app: app, tmp: tmp} = ctx
      fake = Path.join(tmp, "old-cargo")
      File.mkdir_p!(fake)
      # Debian 12's cargo, which cannot read Cargo.lock version 4.
      File.write!(Path.join(fake, "cargo"), """
      #!/bin/sh
      if [ "$1" = "--version" ]; then echo "cargo 1.65.0"; exit 0; fi
      echo "fake cargo must not build" >&2; exit 3
      """)

      File.chmod!(Path.join(fake, "cargo"), 0o755)
      env = no_cargo(ctx, CARAVAN_BUILD: "1", PATH: fake <> ":" <> ctx.path_without_cargo)
      {out, status} = mix(app, ["deps.compile", "caravan"], env)
      assert status != 0, out
      assert out =~ "Caravan needs cargo 1.91 or newer"
      assert out =~ "is 1.65.0"
      refute out =~ "fake cargo must not build"
    end
  end

  # -- setup -------------------------------------------------------------------

  defp build_once(_) do
    tmp = Path.join(System.tmp_dir!(), "caravan_pkg_test_#{System.unique_integer([:positive])}")
    File.rm_rf!(tmp)
    File.mkdir_p!(tmp)
    on_exit(fn -> File.rm_rf!(tmp) end)

    # Source build of a dependency (the one cargo build).
    src = Path.join(tmp, "src")
    File.mkdir_p!(src)
    dep = ThrowawayApp.copy_caravan(src)
    src_app = ThrowawayApp.new(src, "srcapp", dep)
    before = snapshot(dep)
    {src_out, status} = mix(src_app, ["compile"], CARAVAN_BUILD: "1")
    if status != 0, do: raise("source build failed:\n#{src_out}")
    src_after = snapshot(dep)

    # The maintainer task, in that dependency's directory now that it has
    # been compared (same crate paths and target directory: cargo finds the
    # build fresh).
    out_dir = Path.join(tmp, "releases")
    target_dir = Path.join(src_app, "_build/caravan_native/default")

    {maint_out, status} =
      mix(dep, ["caravan.precompile", "--output", out_dir], CARGO_TARGET_DIR: target_dir)

    if status != 0, do: raise("mix caravan.precompile failed:\n#{maint_out}")
    [artifact] = Path.wildcard(Path.join(out_dir, "*.so.tar.gz"))
    checksums = Precompiled.read_checksums(Path.join(dep, @checksum_file))

    # The user's app: a fresh package copy holding that checksum file.
    user = Path.join(tmp, "user")
    File.mkdir_p!(user)
    user_dep = ThrowawayApp.copy_caravan(user)
    File.cp!(Path.join(dep, @checksum_file), Path.join(user_dep, @checksum_file))
    user_dep_before = snapshot(user_dep)
    user_app = ThrowawayApp.new(user, "userapp", user_dep)

    path_without_cargo = path_without("cargo")

    # Elixir code of the dependency compiled once (the native step fails:
    # no location configured); each test then runs the native step.
    mix(user_app, ["compile"], PATH: path_without_cargo)

    %{
      tmp: tmp,
      src_app: src_app,
      src_out: src_out,
      src_before: before,
      src_after: src_after,
      artifact: artifact,
      checksums: checksums,
      maint_out: maint_out,
      user_dep: user_dep,
      user_dep_before: user_dep_before,
      user_app: user_app,
      path_without_cargo: path_without_cargo
    }
  end

  # -- helpers -----------------------------------------------------------------

  defp installed(app), do: Path.join(app, "_build/dev/lib/caravan/priv/native/caravan_native.so")

  defp unpacked(artifact) do
    {:ok, library} = Precompiled.unpack(File.read!(artifact), "artifact")
    library
  end

  # Runs mix in `dir` with a clean Caravan environment plus `env`.
  defp mix(dir, args, env) do
    base = [
      MIX_ENV: "dev",
      CARAVAN_BUILD: nil,
      CARAVAN_PRECOMPILED_URL: nil,
      CARAVAN_PRECOMPILED_PATH: nil,
      CARGO_TARGET_DIR: nil
    ]

    env = for {k, v} <- Keyword.merge(base, env), do: {Atom.to_string(k), v}
    System.cmd("mix", args, cd: dir, env: env, stderr_to_stdout: true)
  end

  defp no_cargo(ctx, env), do: Keyword.merge([PATH: ctx.path_without_cargo], env)

  # PATH without any directory holding `program`.
  defp path_without(program) do
    path =
      System.get_env("PATH")
      |> String.split(":")
      |> Enum.reject(&File.exists?(Path.join(&1, program)))
      |> Enum.join(":")

    # The throwaway builds still find erl, elixir and mix.
    for tool <- ["erl", "elixir", "mix"],
        do: assert(Enum.any?(String.split(path, ":"), &File.exists?(Path.join(&1, tool))))

    path
  end

  # Relative path => SHA-256 of every file under `dir`.
  defp snapshot(dir) do
    for file <- Path.wildcard(Path.join(dir, "**"), match_dot: true),
        File.regular?(file),
        into: %{} do
      {Path.relative_to(file, dir), Precompiled.checksum(File.read!(file))}
    end
  end

  # The source files under `dirs` (no git needed: the OTP legs' chroots
  # have none), relative to the checkout.
  defp git_files(dirs) do
    for dir <- dirs,
        file <- Path.wildcard(Path.join([@root, dir, "**", "*.{ex,rs}"])),
        do: Path.relative_to(file, @root)
  end

  defp probe_script do
    ~S"""
    IO.puts("port=#{Caravan.Epmd.dist_port(:"app-4834@example.net")}")
    IO.puts("lib=#{Caravan.Native.library_path()}")
    IO.puts("hooks=#{function_exported?(Caravan.Native, :floor, 0)}")
    """
  end

  # OTP's httpd on 127.0.0.1 (a port the OS picks), serving the artifact as
  # /releases/<artifact>.
  defp start_httpd(%{tmp: tmp, artifact: artifact}) do
    www = Path.join(tmp, "www")
    File.mkdir_p!(Path.join(www, "releases"))
    File.cp!(artifact, Path.join([www, "releases", Path.basename(artifact)]))
    {:ok, _} = Application.ensure_all_started(:inets)

    :inets.start(:httpd,
      port: 0,
      bind_address: {127, 0, 0, 1},
      server_name: ~c"caravan-test",
      server_root: String.to_charlist(tmp),
      document_root: String.to_charlist(www)
    )
  end

  # An epmd-less node on the app's build path: Caravan's flags, as in vm.args.
  defp boot(app) do
    ebins = Path.wildcard(Path.join(app, "_build/dev/lib/*/ebin"))

    eval = ~S"""
    {ok, S} = gen_tcp:connect({127,0,0,1}, 4871, []), gen_tcp:close(S),
    io:format("node=~s listening=4871~nlib=~s~n",
              [node(), 'Elixir.Caravan.Native':library_path()]),
    halt().
    """

    System.cmd(
      "erl",
      ["-noshell", "-name", "app-4871@127.0.0.1", "-start_epmd", "false"] ++
        ["-epmd_module", "Elixir.Caravan.Epmd.Client", "-setcookie", "caravan_pkg_test"] ++
        Enum.flat_map(ebins, &["-pa", &1]) ++
        Enum.flat_map([:elixir, :logger], &["-pa", Application.app_dir(&1, "ebin")]) ++
        ["-eval", eval],
      stderr_to_stdout: true
    )
  end
end
