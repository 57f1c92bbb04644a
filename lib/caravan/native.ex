defmodule Caravan.Native do
  @moduledoc false
  # NIF stubs for the Rust crate native/caravan_native, and its loader.
  #
  # No @on_load: in a release (embedded mode) @on_load runs after the kernel
  # has started, too late for the epmd module. The library is loaded
  # explicitly, by Caravan.Epmd.Client.start_link/0 at boot or by the first
  # stub called, and loading twice is harmless.

  @library ~c"caravan_native"

  @doc """
  Loads the NIF library from `priv/native/caravan_native.so`.

  Returns `:ok` (also when already loaded) or `{:error, message}` with a
  message naming the library path and the reason. Safe to call at boot,
  before the file server exists.
  """
  @spec load() :: :ok | {:error, String.t()}
  def load do
    path = library_path()

    case :erlang.load_nif(path, 0) do
      :ok ->
        :ok

      {:error, {:reload, _}} ->
        :ok

      {:error, {reason, text}} ->
        {:error,
         "Caravan could not load its native library #{path}.so: #{reason}: #{text}. " <>
           "Build it with `mix compile` (needs cargo) and check that the file exists " <>
           "and matches this machine."}
    end
  end

  @doc "The library path without extension, as `:erlang.load_nif/2` takes it."
  @spec library_path() :: charlist()
  def library_path do
    priv =
      case :code.priv_dir(:caravan) do
        {:error, _} ->
          # Not loaded as an application (a bare -pa): priv/ sits beside ebin/.
          __MODULE__
          |> :code.which()
          |> :filename.dirname()
          |> :filename.dirname()
          |> then(&:filename.join(&1, ~c"priv"))

        dir ->
          dir
      end

    :filename.join([priv, ~c"native", @library])
  end

  # The stubs load the library on first use, then call the NIF that replaced
  # them. load/0 returns :ok only once the NIFs are in place, so the retry
  # cannot loop.
  def dist_port(node), do: retry(:dist_port, [node])
  def listen_port(node), do: retry(:listen_port, [node])

  # Does nothing: the cost of the cheapest NIF call, for bench/.
  def floor, do: retry(:floor, [])

  def srv_lookup(query, nameservers, timeout_ms, node_host),
    do: retry(:srv_lookup, [query, nameservers, timeout_ms, node_host])

  # The SRV lookup with node_host :auto (not a NIF).
  def srv_lookup(query, nameservers, timeout_ms),
    do: srv_lookup(query, nameservers, timeout_ms, :auto)

  def host_lookup(host, family, nameservers, timeout_ms),
    do: retry(:host_lookup, [host, family, nameservers, timeout_ms])

  def nameserver(text), do: retry(:nameserver, [text])

  # %{started: boolean, in_flight: lookups spawned and not yet replied}.
  def runtime_info, do: retry(:runtime_info, [])

  # Internal, for the tests only: panics on purpose in the NIF call (:nif,
  # raises :nif_panicked) or in a runtime task (:runtime, returns {:ok, ref};
  # the reply is {:caravan_srv, ref, {:error, {:internal, message}}}), to
  # check that a panic in Rust always becomes an Elixir error.
  def __panic__(place), do: retry(:__panic__, [place])

  defp retry(fun, args) do
    case load() do
      :ok -> apply(__MODULE__, fun, args)
      {:error, message} -> :erlang.nif_error({:nif_not_loaded, message})
    end
  end
end
