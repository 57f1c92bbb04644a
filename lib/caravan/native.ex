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

    case check_elf(path ++ ~c".so") do
      :ok ->
        load_nif(path)

      {:error, reason} ->
        {:error,
         "Caravan could not load its native library #{path}.so: #{reason}. " <>
           "Build it again with `mix compile` (needs cargo) and copy it whole."}
    end
  end

  defp load_nif(path) do
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

  # A truncated ELF library (an interrupted copy) crashes the VM inside
  # dlopen with SIGBUS instead of failing load_nif/2, so the ELF headers are
  # checked first: every segment and the section header table must lie
  # within the file (ELF spec, "ELF Header" and "Program Header"). Reads the
  # headers only, with :prim_file, which works at boot before the file server.
  # Files that are not ELF (or cannot be read) are left to load_nif/2, which
  # refuses them with a reason.
  defp check_elf(file) do
    with {:ok, {:file_info, size, _, _, _, _, _, _, _, _, _, _, _, _}} <-
           :prim_file.read_file_info(file),
         {:ok, fd} <- :prim_file.open(file, [:read, :binary]) do
      try do
        check_elf(fd, size)
      after
        :prim_file.close(fd)
      end
    else
      _ -> :ok
    end
  end

  defp check_elf(fd, size) do
    with {:ok, <<0x7F, "ELF", class, 1, _::binary-size(10), rest::binary>>} <-
           :prim_file.pread(fd, 0, 64),
         {:ok, {phoff, phentsize, phnum, shoff, shentsize, shnum}} <- elf_header(class, rest),
         {:ok, phdrs} when byte_size(phdrs) == phentsize * phnum <-
           pread_all(fd, phoff, phentsize * phnum, size) do
      needed =
        [shoff + shentsize * shnum | segment_ends(class, phdrs, phentsize)]
        |> Enum.max()

      if needed <= size,
        do: :ok,
        else: {:error, "truncated: the file is #{size} bytes but its ELF headers need #{needed}"}
    else
      {:truncated, needed} ->
        {:error, "truncated: the file is #{size} bytes but its ELF headers need #{needed}"}

      _not_little_endian_elf ->
        :ok
    end
  end

  # After the 16-byte e_ident: type, machine, version, entry, phoff, shoff,
  # flags, ehsize, phentsize, phnum, shentsize, shnum (little-endian).
  defp elf_header(
         2,
         <<_::32, _::32, _::64-little, phoff::64-little, shoff::64-little, _::32, _::16,
           phentsize::16-little, phnum::16-little, shentsize::16-little, shnum::16-little,
           _::binary>>
       ),
       do: {:ok, {phoff, phentsize, phnum, shoff, shentsize, shnum}}

  defp elf_header(
         1,
         <<_::32, _::32, _::32-little, phoff::32-little, shoff::32-little, _::32, _::16,
           phentsize::16-little, phnum::16-little, shentsize::16-little, shnum::16-little,
           _::binary>>
       ),
       do: {:ok, {phoff, phentsize, phnum, shoff, shentsize, shnum}}

  defp elf_header(_class, _rest), do: :error

  defp pread_all(fd, offset, length, size) do
    if offset + length > size,
      do: {:truncated, offset + length},
      else: :prim_file.pread(fd, offset, length)
  end

  # p_offset + p_filesz of every program header.
  defp segment_ends(class, phdrs, phentsize) do
    for phdr <- entries(phdrs, phentsize) do
      case {class, phdr} do
        {2, <<_::32, _::32, offset::64-little, _::64, _::64, filesz::64-little, _::binary>>} ->
          offset + filesz

        {1, <<_::32, offset::32-little, _::32, _::32, filesz::32-little, _::binary>>} ->
          offset + filesz
      end
    end
  end

  # `bin` cut into `size`-byte entries (no binary generator: its size
  # variable needs a pin on Elixir 1.20, which 1.14 refuses there).
  defp entries(bin, size) when size > 0 and byte_size(bin) >= size,
    do: [binary_part(bin, 0, size) | entries(binary_part(bin, size, byte_size(bin) - size), size)]

  defp entries(_bin, _size), do: []

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
