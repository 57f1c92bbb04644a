defmodule Caravan.Test.DnsSockets do
  @moduledoc """
  The socket side the DNS test servers share (`Caravan.Test.ConsulDns`,
  `Caravan.Test.FaultDns`): one UDP socket and one TCP listener (2-byte
  length framing, RFC 1035 4.2.2) on the same address and port. The server
  process owns both; it decides the answers, this module moves the bytes.

  What a server answers to a query (its `answer`):

    * `{:reply, bin}` - sent at once;
    * `{:delay, ms, bin}` - sent after `ms` milliseconds;
    * `:drop` - nothing is sent; over TCP the connection is held open;
    * `:close` - nothing is sent; over TCP the connection is closed (over
      UDP the same as `:drop`).

  UDP datagrams reach the server as `{:udp, udp, ip, port, packet}`; each
  TCP query is a `GenServer.call(server, {:answer, :tcp, packet})` from
  the connection's own process, replied with an answer.
  """

  import Bitwise

  @typedoc "What the server does with one query."
  @type answer :: {:reply, binary()} | {:delay, non_neg_integer(), binary()} | :drop | :close

  @typedoc "The open sockets."
  @type t :: %{udp: :gen_udp.socket(), listen: :gen_tcp.socket()}

  @doc """
  Opens UDP and TCP on `ip:port` for the calling server process and starts
  the linked TCP acceptor. `tcp_opts` go to `:gen_tcp.listen/2` on top of
  the framing; `idle_ms` (default `:infinity`) closes a TCP connection
  silent that long. A server stopped just before on the same port may
  still have connection processes exiting (exit signals travel
  asynchronously): the listen is retried for 2 s on `:eaddrinuse`.
  """
  @spec open(:inet.ip_address(), :inet.port_number(), keyword(), timeout()) :: t()
  def open(ip, port, tcp_opts \\ [], idle_ms \\ :infinity) do
    {:ok, udp} =
      :gen_udp.open(port, [:binary, ip: ip, active: true, reuseaddr: true, recbuf: 1 <<< 20])

    opts = [:binary, ip: ip, active: false, reuseaddr: true, packet: 2] ++ tcp_opts
    {:ok, listen} = retry_eaddrinuse(40, fn -> :gen_tcp.listen(port, opts) end)
    server = self()
    spawn_link(fn -> accept_loop(listen, &connection_loop(&1, server, idle_ms)) end)
    %{udp: udp, listen: listen}
  end

  @doc "Sends `answer` to a UDP query from `ip:port`. Returns `:ok`."
  @spec reply_udp(t(), :inet.ip_address(), :inet.port_number(), answer()) :: :ok
  def reply_udp(%{udp: udp}, ip, port, {:reply, bin}) do
    _ = :gen_udp.send(udp, ip, port, bin)
    :ok
  end

  def reply_udp(%{udp: udp}, ip, port, {:delay, ms, bin}) do
    spawn_link(fn ->
      Process.sleep(ms)
      :gen_udp.send(udp, ip, port, bin)
    end)

    :ok
  end

  def reply_udp(_sockets, _ip, _port, _drop_or_close), do: :ok

  @doc "Closes both sockets (the acceptor then ends). Returns `:ok`."
  @spec close(t()) :: :ok
  def close(%{udp: udp, listen: listen}) do
    :gen_udp.close(udp)
    :gen_tcp.close(listen)
  end

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

  # Several queries per connection, as real servers serve them.
  defp connection_loop(socket, server, idle_ms) do
    with {:ok, packet} <- :gen_tcp.recv(socket, 0, idle_ms) do
      case ask(server, packet) do
        {:reply, bin} ->
          :gen_tcp.send(socket, bin)
          connection_loop(socket, server, idle_ms)

        {:delay, ms, bin} ->
          Process.sleep(ms)
          :gen_tcp.send(socket, bin)
          connection_loop(socket, server, idle_ms)

        :drop ->
          # Hold the connection open and say nothing more.
          Process.sleep(:infinity)

        :close ->
          :gen_tcp.close(socket)
      end
    else
      {:error, _} -> :gen_tcp.close(socket)
    end
  end

  # A server that has stopped answers nothing: the connection closes.
  defp ask(server, packet) do
    GenServer.call(server, {:answer, :tcp, packet})
  catch
    :exit, _ -> :close
  end

  defp retry_eaddrinuse(tries, fun) do
    case fun.() do
      {:error, :eaddrinuse} when tries > 0 ->
        Process.sleep(50)
        retry_eaddrinuse(tries - 1, fun)

      result ->
        result
    end
  end
end
