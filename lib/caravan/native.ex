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

  Returns `:ok` (also when already loaded) or `{:error, {:native_library,
  message}}` with a message naming the library path and the reason. Safe
  to call at boot, before the file server exists.
  """
  @spec load() :: :ok | {:error, {:native_library, String.t()}}
  def load do
    path = library_path()

    case check_elf(path ++ ~c".so") do
      :ok ->
        load_nif(path)

      {:error, reason} ->
        {:error,
         {:native_library,
          "Caravan could not load its native library #{path}.so: #{reason}. " <>
            "Build it again with `mix compile` (needs cargo) and copy it whole."}}
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
         {:native_library,
          "Caravan could not load its native library #{path}.so: #{reason}: #{text}. " <>
            "Build it with `mix compile` (needs cargo) and check that the file exists " <>
            "and matches this machine."}}
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

  # The stubs. The library is loaded by the epmd module at boot; when
  # Caravan is used without it (mix tasks, a node started with epmd), the
  # first stub called loads it and calls the NIF that replaced it. A stub
  # runs at most twice: a stub that runs while the library is loaded has no
  # NIF behind it and raises :nif_not_loaded at once (it used to loop).
  # The specs are the NIFs' (native/caravan_native/src/lib.rs).

  @typedoc "A node name as the port rule takes it."
  @type node_name :: atom() | charlist() | String.t()

  @spec dist_port(node_name()) :: {:ok, :inet.port_number()} | {:error, Caravan.error()}
  def dist_port(node), do: load_and_call(:dist_port, [node])

  @spec listen_port(node_name()) :: {:ok, :inet.port_number()} | {:error, Caravan.error()}
  def listen_port(node), do: load_and_call(:listen_port, [node])

  # nameservers parsed by nameserver/1; timeout_ms bounds the lookup; search
  # {[domain], ndots} completes a relative query ({[], 1}: absolute). Reply:
  # {:caravan_srv, ref, result} (trace: + [line]), after early records if asked.
  # With select (and no trace), the first UDP query may instead be left to
  # the caller to wait on: {:ok, {ref, resource, wait_ms}}; the caller then
  # calls srv_read/2 on {:select, resource, ref, :ready_input} and
  # srv_tick/1 after wait_ms (Caravan.DNS does).
  @spec srv_lookup(
          String.t(),
          [Caravan.DNS.Options.nameserver()],
          non_neg_integer(),
          Caravan.DNS.Options.node_host(),
          boolean(),
          {[String.t()], non_neg_integer()},
          boolean(),
          boolean()
        ) ::
          {:ok, reference() | {reference(), reference(), non_neg_integer()}}
          | {:error, Caravan.error()}
  def srv_lookup(
        query,
        ns,
        timeout_ms,
        node_host,
        trace,
        search \\ {[], 1},
        early \\ false,
        select \\ false
      ),
      do:
        load_and_call(:srv_lookup, [
          query,
          ns,
          timeout_ms,
          node_host,
          trace,
          search,
          early,
          select
        ])

  # The steps of a lookup srv_lookup/8 left to the caller: {:done, result}
  # (result as in the {:caravan_srv, ref, result} message), :spawned (that
  # message will come) or {:wait, ms} (call srv_tick/1 after ms unless
  # {:select, resource, ref, :ready_input} comes first).
  @spec srv_read(reference(), reference()) ::
          {:done, {:ok, [map()]} | {:error, Caravan.error()}}
          | :spawned
          | {:wait, non_neg_integer()}
  def srv_read(resource, ref), do: load_and_call(:srv_read, [resource, ref])

  @spec srv_tick(reference()) ::
          {:done, {:ok, [map()]} | {:error, Caravan.error()}} | {:wait, non_neg_integer()}
  def srv_tick(resource), do: load_and_call(:srv_tick, [resource])

  # A (:inet) or AAAA (:inet6) records of host; the answer comes as
  # {:caravan_host, ref, result} (with trace, the lines as a fourth element).
  @spec host_lookup(
          String.t(),
          :inet | :inet6,
          [Caravan.DNS.Options.nameserver()],
          non_neg_integer(),
          boolean()
        ) :: {:ok, reference()} | {:error, Caravan.error()}
  def host_lookup(host, family, nameservers, timeout_ms, trace),
    do: load_and_call(:host_lookup, [host, family, nameservers, timeout_ms, trace])

  # The one nameserver parser: "IP", "IP:PORT" or "[IPv6]:PORT".
  @spec nameserver(String.t()) ::
          {:ok, Caravan.DNS.Options.nameserver()} | {:error, Caravan.error()}
  def nameserver(text), do: load_and_call(:nameserver, [text])

  # Test hooks: NIFs of the library built with the cargo feature
  # `test-hooks` (MIX_ENV=test, see Mix.Tasks.Compile.CaravanNative), and
  # their stubs, compiled only then, so a production node has neither.
  if Mix.Tasks.Compile.CaravanNative.test_hooks?() do
    # Does nothing: the cost of the cheapest NIF call.
    def floor, do: load_and_call(:floor, [])

    # %{started: boolean, in_flight: lookups spawned and not yet replied}.
    def runtime_info, do: load_and_call(:runtime_info, [])

    # Bytes the native library holds on its heap now (counted with
    # stats_alloc in builds with the cargo feature `heap-count`: the test
    # suite's, not the bench's).
    def native_heap, do: load_and_call(:native_heap, [])

    # Forgets which SRV queries go straight to TCP (their last complete
    # answer did not fit UDP); returns how many were remembered.
    def forget_transports, do: load_and_call(:forget_transports, [])

    # Panics on purpose in the NIF call (:nif, raises :nif_panicked) or in
    # a runtime task (:runtime, returns {:ok, ref}; the reply is
    # {:caravan_srv, ref, {:error, {:internal, message}}}), to check that a
    # panic in Rust always becomes an Elixir error.
    def __panic__(place), do: load_and_call(:__panic__, [place])

    # A stub with no NIF behind it in any build: must raise, not spin.
    def __no_nif__, do: load_and_call(:__no_nif__, [])
  end

  @calling {__MODULE__, :calling}

  defp load_and_call(fun, args) do
    cond do
      Process.get(@calling) ->
        # Loaded, and still this stub: the library has no such NIF.
        :erlang.nif_error(:nif_not_loaded)

      (result = load()) != :ok ->
        {:error, {_kind, message}} = result
        :erlang.nif_error({:nif_not_loaded, message})

      true ->
        Process.put(@calling, true)

        try do
          apply(__MODULE__, fun, args)
        after
          Process.delete(@calling)
        end
    end
  end
end
