defmodule Mix.Tasks.Caravan.Port do
  @shortdoc "Prints the distribution port of a node name"
  @moduledoc """
  Prints the distribution port Caravan derives from a node name: the
  integer just left of the `@`, or #{4370} when the name part has no
  trailing digits (see `Caravan.Epmd`).

      $ mix caravan.port app-4370@web1.node.dc1.consul
      4370

  Release helper nodes (`rem-<hex>-...`, `rpc-<hex>-...`) listen on a
  random port; the task says so. An invalid name exits with status 1 and
  the reason.
  """
  use Mix.Task

  @impl Mix.Task
  def run([node]) do
    Mix.Task.run("compile")

    with {:ok, port} <- Caravan.Epmd.fetch_dist_port(node),
         {:ok, listen} <- Caravan.Epmd.listen_port(node) do
      Mix.shell().info(Integer.to_string(port))

      if listen == 0 do
        Mix.shell().info(
          "(a release helper node: it listens on a random port and connects out on #{port})"
        )
      end
    else
      {:error, {kind, message}} -> Mix.raise("#{kind}: #{message}")
    end
  end

  def run(_args), do: Mix.raise("usage: mix caravan.port NODE_NAME")
end
