defmodule Caravan.Test.Listeners do
  @moduledoc """
  What listens on a TCP port on this machine, read from the kernel's socket
  tables (`/proc/net/tcp` and `/proc/net/tcp6`), so a listener on any
  address (127.0.0.1, 127.0.3.1, ::1, 0.0.0.0, ...) is seen. Used to show
  that nothing ever listens on epmd's port 4369.
  """

  # st column of /proc/net/tcp*: 0A is TCP_LISTEN (include/net/tcp_states.h).
  @listen "0A"

  @doc """
  The listening sockets whose local port is `port` (1..65535), as a list of
  `"address:port"` strings in /proc's hex form (e.g. `"0100007F:1111"` for
  127.0.0.1:4369). `[]` when nothing listens there.
  """
  @spec on_port(:inet.port_number()) :: [String.t()]
  def on_port(port) do
    hex_port = port |> Integer.to_string(16) |> String.pad_leading(4, "0")

    for file <- ["/proc/net/tcp", "/proc/net/tcp6"],
        {:ok, table} <- [File.read(file)],
        [_sl, local, _remote, @listen | _] <-
          table |> String.split("\n", trim: true) |> tl() |> Enum.map(&String.split/1),
        String.ends_with?(local, ":" <> hex_port),
        do: local
  end

  @doc """
  Starts a process that samples `on_port(port)` every `interval` ms until
  `stop/1`, so a listener that appears for a moment during a test is
  caught. Returns the watcher's pid.
  """
  @spec watch(:inet.port_number(), pos_integer()) :: pid()
  def watch(port, interval \\ 25) do
    spawn_link(fn -> loop(port, interval, [], 0) end)
  end

  @doc """
  Stops a watcher and returns `{samples, seen}`: how many times it looked
  and the distinct listeners it saw (`[]` when none).
  """
  @spec stop(pid()) :: {non_neg_integer(), [String.t()]}
  def stop(watcher) do
    ref = make_ref()
    send(watcher, {:stop, self(), ref})

    receive do
      {^ref, result} -> result
    after
      10_000 -> raise "listener watcher did not answer"
    end
  end

  @doc "The distinct listeners a running watcher has seen so far."
  @spec seen(pid()) :: [String.t()]
  def seen(watcher) do
    ref = make_ref()
    send(watcher, {:seen, self(), ref})

    receive do
      {^ref, seen} -> seen
    after
      10_000 -> raise "listener watcher did not answer"
    end
  end

  @doc """
  For `setup_all`: watches `port` (default 4369, epmd's) from now until the
  module's tests are done, then raises, failing the module, if anything
  listened on it at any sample. Returns the watcher's pid.
  """
  @spec guard(:inet.port_number()) :: pid()
  def guard(port \\ 4369) do
    watcher = watch(port)

    ExUnit.Callbacks.on_exit(fn ->
      {samples, seen} = stop(watcher)

      if seen != [],
        do: raise("something listened on port #{port} (#{samples} samples): #{inspect(seen)}")
    end)

    watcher
  end

  defp loop(port, interval, seen, samples) do
    seen = Enum.uniq(seen ++ on_port(port))

    receive do
      {:stop, from, ref} ->
        send(from, {ref, {samples + 1, seen}})

      {:seen, from, ref} ->
        send(from, {ref, seen})
        loop(port, interval, seen, samples + 1)
    after
      interval -> loop(port, interval, seen, samples + 1)
    end
  end
end
