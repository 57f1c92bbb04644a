defmodule Caravan.MixProject do
  use Mix.Project

  @version "2.0.0-dev"

  def project do
    [
      app: :caravan,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      # The native compiler runs after :elixir, which compiles it
      # (lib/mix/tasks/compile.caravan_native.ex): no hex package needed.
      compilers: Mix.compilers() ++ [:caravan_native],
      deps: [],
      docs: [main: "Caravan"],
      test_coverage: [summary: [threshold: 0]],
      # Not test files (Elixir 1.17+ warns about .ex files under test/, an
      # error under mix test --warnings-as-errors on 1.19+).
      test_ignore_filters: [~r"^test/(support|libcluster_standin)/"]
    ]
  end

  def application do
    [extra_applications: [:logger | test_applications(Mix.env())]]
  end

  # test/support makes TLS certificates with :public_key.
  defp test_applications(:test), do: [:public_key]
  defp test_applications(_), do: []

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
