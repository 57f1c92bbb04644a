defmodule Caravan.Test.TcpAcceptor do
  @moduledoc """
  The TCP side the DNS test servers share (`Caravan.Test.ConsulDns`,
  `Caravan.Test.FaultDns`): accept connections on a listening socket, each
  served by its own process.
  """

  @doc """
  Spawns, linked to the caller, a process that accepts on `listen` until
  it is closed; each accepted socket goes to a new linked process that runs
  `serve.(socket)` (it owns the socket). Returns the acceptor's pid.
  """
  @spec start_link(:gen_tcp.socket(), (:gen_tcp.socket() -> term())) :: pid()
  def start_link(listen, serve), do: spawn_link(fn -> accept_loop(listen, serve) end)

  defp accept_loop(listen, serve) do
    case :gen_tcp.accept(listen) do
      {:ok, socket} ->
        pid = spawn_link(fn -> receive(do: ({:socket, socket} -> serve.(socket))) end)
        :ok = :gen_tcp.controlling_process(socket, pid)
        send(pid, {:socket, socket})
        accept_loop(listen, serve)

      {:error, _closed} ->
        :ok
    end
  end
end
