defmodule Caravan.MixProject do
  use Mix.Project

  # The one version of Caravan (hex package, application, precompiled
  # artifact names). The Rust crates under native/ are internal
  # (publish = false) and keep their own 0.1.0.
  @version "2.0.0"
  # Where the package's links and the docs' source links point (a placeholder
  # until the repository is published).
  @source_url "https://github.com/caravan-ex/caravan"

  def project do
    [
      app: :caravan,
      version: @version,
      elixir: "~> 1.14",
      description:
        "Erlang/Elixir distribution without epmd: the distribution port comes from the " <>
          "node name, peers come from DNS SRV records (Consul, Kubernetes). Drop-in " <>
          "successor of Caravan 1.x, with a Rust NIF core.",
      package: package(),
      docs: docs(),
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      # The native compiler runs after :elixir, which compiles it
      # (lib/mix/tasks/compile.caravan_native.ex): no hex package needed.
      compilers: Mix.compilers() ++ [:caravan_native],
      deps: [],
      # :httpc, :ssl, :public_key and :crypto are used at build time only, by the
      # compile task fetching a precompiled library (Caravan.Precompiled);
      # the application does not start them.
      xref: [exclude: [:httpc, :ssl, :public_key, :inets, :crypto]],
      test_coverage: [summary: [threshold: 0]],
      # Not test files (Elixir 1.17+ warns about .ex files under test/, an
      # error under mix test --warnings-as-errors on 1.19+).
      test_ignore_filters: [~r"^test/(support|libcluster_standin)/"]
    ]
  end

  def application do
    [extra_applications: [:logger | test_applications(Mix.env())]]
  end

  # What `mix hex.build` puts in the package: the Elixir sources, the crates'
  # sources and lock file (for source builds), the checksum file (for
  # precompiled libraries). Never target/ or priv/native (build output).
  defp package do
    [
      licenses: ["Apache-2.0"],
      links: %{"GitHub" => @source_url, "Changelog" => "#{@source_url}/blob/main/CHANGELOG.md"},
      files: [
        "lib",
        "native/*/src",
        "native/*/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
        "checksum-Elixir.Caravan.Native.exs",
        "mix.exs",
        ".formatter.exs",
        "README.md",
        "LICENSE",
        "CHANGELOG.md"
      ]
    ]
  end

  # ExDoc's settings (`mix docs` once ExDoc is a dev dependency): the README
  # first, the guides, then the maintainers' pages.
  defp docs do
    [
      main: "readme",
      source_url: @source_url,
      source_ref: "v#{@version}",
      extras: [
        "README.md",
        "guides/installation.md",
        "guides/deployment.md",
        "guides/discovery.md",
        "guides/consul-nomad-kubernetes.md",
        "guides/troubleshooting.md",
        "guides/migrating-from-1x.md",
        "guides/security.md",
        "CONTRIBUTING.md",
        "bench/README.md": [filename: "bench", title: "Bench"],
        "CHANGELOG.md": [title: "Changelog"]
      ],
      groups_for_extras: [
        Guides: ~r"^guides/",
        Maintainers: ["CONTRIBUTING.md", "bench/README.md", "CHANGELOG.md"]
      ],
      groups_for_modules: [
        "Port from name": [Caravan.Epmd, Caravan.Epmd.Client, Caravan.Epmd.Dist_dist],
        Discovery: [
          Caravan.Cluster.DnsStrategy,
          Caravan.DNS,
          Caravan.DnsClient,
          Caravan.DnsClient.Native,
          Caravan.DnsClient.InetRes,
          Caravan.Telemetry
        ]
      ]
    ]
  end

  # test/support makes TLS certificates with :public_key; the precompiled
  # tests serve artifacts with :inets' httpd, over :ssl too.
  defp test_applications(:test), do: [:public_key, :inets, :ssl]
  defp test_applications(_), do: []

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
