defmodule Caravan.DNS do
  @moduledoc """
  SRV lookups (RFC 2782) done natively: Caravan's own DNS exchange in the
  NIF, which never blocks a BEAM scheduler. With one nameserver the first
  UDP reply is watched for by the BEAM's own poll set and read in the
  calling process; retries over TCP and the rest run on a tokio runtime.

      {:ok, records} = Caravan.DNS.lookup_srv("_app._tcp.service.consul", nameservers: ["127.0.0.1:8600"])
      # records: [%{priority: 1, weight: 1, port: 4370, target: "web1.node.dc1.consul",
      #             addresses: [{10, 0, 0, 1}], host: "web1.node.dc1.consul"}, ...]

  An SRV query goes out over UDP with EDNS0, and over TCP when the UDP
  answer may be incomplete or the last complete one needed TCP: see
  [Complete answers](guides/discovery.md#complete-answers). Each record's
  `:transport` says which transport gave it. Answers are not cached.

  ## Options

    * `:nameservers` - nameservers to ask, in order: `"IP"` (port 53),
      `"IP:PORT"` (`"127.0.0.1:8600"` for a Consul agent), `"[IPv6]:PORT"`,
      or Caravan 1.x's `{"IP", port}` tuples (port an integer or a string).
      Default: `default_nameservers/0` (the epmd module's
      `CARAVAN_NAMESERVERS`, else the VM's, else `/etc/resolv.conf`), the
      last two with their [search list](guides/discovery.md#which-nameservers).
    * `:timeout` - bound on the whole lookup, retries and TCP included, in
      ms. Default #{Caravan.DNS.Options.default_timeout()}.
    * `:node_host` - how each record's `:host` (the host part of the node
      name) is chosen: `:auto` (default) the target, except Consul
      `<hex>.addr.<dc>.consul` targets, which become their IP address;
      `:target` the target exactly as given (Caravan 1.x); `:ip` the
      target's IP address, decoded from an `.addr.` target, else from the
      answer's additional section, else resolved (A, then AAAA) within the
      same `:timeout`. IPv6 addresses are written as RFC 5952 text
      (`"fd00::1"`).
    * `:early` (`lookup_srv/2`) - a function given a doubted UDP answer's
      records while the complete answer, the only result, comes over TCP.

  ## Errors

  `{:error, {kind, message}}`, `message` a readable sentence. `:nxdomain`
  (the name does not exist) and `:nodata` (no SRV records) are authoritative
  "no records"; `:timeout`, `:server_failure` (SERVFAIL, REFUSED, ...),
  `:cname_loop` (the name leads into a CNAME loop) and `:transport`
  (malformed answers, closed connections, ...) mean the answer is unknown.
  `:config` (the resolver cannot be set up, e.g. an unreadable
  resolv.conf) and `:runtime` (Caravan's tokio runtime cannot start) are
  about this machine. `:internal` means Caravan's native code failed (a
  bug; the message says where). `:invalid_query`, `:invalid_nameserver`
  and `:invalid_option` name the bad argument. The message of a failed
  lookup names the nameservers asked. Every kind is listed in
  `t:Caravan.error_kind/0`.
  """

  require Logger
  alias Caravan.DNS.{Options, VmNameservers}

  # How long past its own bound the caller waits for the native reply.
  @reply_grace 1_000

  @typedoc """
  One SRV record: `name` answered a query completed from the search list;
  `target` has no trailing dot; `addresses` are the target's (additional
  section, or resolved under `node_host: :ip`); `host` is the node name's
  host under `:node_host` (nil: `:ip` found no address).
  """
  @type srv_record :: %{
          optional(:name) => String.t(),
          priority: 0..65_535,
          weight: 0..65_535,
          port: 0..65_535,
          target: String.t(),
          addresses: [:inet.ip_address()],
          host: String.t() | nil,
          transport: String.t()
        }

  @type reason :: Caravan.error()

  @doc """
  Looks up the SRV records of `query` and waits for the answer.

  Returns `{:ok, [record]}` (at least one record) or `{:error, {kind, message}}`
  (see the module doc). Returns within `:timeout` ms plus a short grace.

  With one nameserver the calling process waits for the first UDP reply
  itself: the BEAM sends it `{:select, resource, ref, :ready_input}` when
  the reply can be read, and this function takes it from the mailbox. A
  reply that arrives just as the bound passes can leave one such message
  behind (the lookup has already returned its timeout); a process that
  logs unexpected messages may see it.
  """
  @spec lookup_srv(String.t(), keyword()) :: {:ok, [srv_record()]} | {:error, reason()}
  def lookup_srv(query, opts \\ []) do
    trace = trace?()

    with {:ok, started, timeout, nameservers} <- start(query, opts, trace, not trace) do
      started
      |> await_started(timeout + @reply_grace, query, opts[:early])
      |> name_the_asked(nameservers)
    end
  end

  @doc false
  # Starts an SRV lookup and returns `{:ok, ref}` at once (the NIF call takes
  # microseconds). The calling process later receives exactly one message
  # `{:caravan_srv, ref, {:ok, [record]} | {:error, {kind, message}}}` within
  # `:timeout` ms.
  #
  # Returns `{:error, {kind, message}}` at once for an invalid query, option
  # or nameserver.
  @spec lookup_srv_async(String.t(), keyword()) :: {:ok, reference()} | {:error, reason()}
  def lookup_srv_async(query, opts \\ [])

  def lookup_srv_async(query, opts) do
    with {:ok, ref, _, _} <- start(query, Keyword.delete(opts, :early), false, false),
         do: {:ok, ref}
  end

  # Validates the arguments once and starts the native lookup:
  # {:ok, started, timeout_ms, nameservers} or {:error, reason}, started
  # being the ref of the reply to come or, with `select`, possibly
  # {ref, resource, wait_ms} (await_started/4). No :nameservers means the
  # defaults (default_nameservers/0).
  defp start(query, opts, trace, select) when is_binary(query) and is_list(opts) do
    with {:ok, %Options{} = o} <- Options.new(opts),
         {ns, search} = VmNameservers.with_search(o.nameservers),
         early? = is_function(opts[:early], 1),
         {:ok, started} <-
           Caravan.Native.srv_lookup(
             query,
             ns,
             o.timeout,
             o.node_host,
             trace,
             search,
             early?,
             select
           ) do
      {:ok, started, o.timeout, ns}
    end
  end

  defp start(query, _opts, _trace, _select),
    do: {:error, {:invalid_query, "expected the query as a binary, got: #{inspect(query)}"}}

  @doc false
  # Waits up to `timeout` ms for the answer to `lookup_srv_async/2`.
  #
  # Returns the answer, or `{:error, {:timeout, message}}`; a reply that
  # arrives later stays in the mailbox as `{:caravan_srv, ref, _}`.
  @spec await(reference(), timeout()) :: {:ok, [srv_record()]} | {:error, reason()}
  def await(ref, timeout), do: await(:caravan_srv, ref, timeout, nil, nil)

  # A lookup whose first UDP query the BEAM's poll set watches for this
  # process: the BEAM sends {:select, resource, ref, :ready_input} when the
  # reply can be read, so it wakes this process directly (no thread of
  # Caravan's in between); the steps are taken here, each a short NIF call
  # (Caravan.Native.srv_read/2, srv_tick/1: copies of the query are sent
  # when due, the bound is kept). Once the reply is in, the lookup ends at
  # once or goes on in Caravan's runtime, which replies as for any lookup.
  defp await_started({ref, resource, wait}, timeout, query, early) do
    polled(ref, resource, wait, System.monotonic_time(:millisecond) + timeout, query, early)
  end

  defp await_started(ref, timeout, query, early),
    do: await(:caravan_srv, ref, timeout, query, early)

  defp polled(ref, resource, wait, deadline, query, early) do
    step =
      receive do
        {:select, ^resource, ^ref, :ready_input} -> Caravan.Native.srv_read(resource, ref)
      after
        wait -> Caravan.Native.srv_tick(resource)
      end

    case step do
      {:wait, ms} ->
        polled(ref, resource, ms, deadline, query, early)

      {:done, answer} ->
        # A reply that came as the bound passed: its notice is dropped.
        receive do
          {:select, ^resource, ^ref, _} -> answer
        after
          0 -> answer
        end

      :spawned ->
        left = max(deadline - System.monotonic_time(:millisecond), 0)
        await(:caravan_srv, ref, left, query, early)
    end
  end

  # A traced reply carries the lookup's tracing events (Caravan's
  # transport's: the nameservers asked, retries, truncation and the switch to
  # TCP), logged here at debug as one entry; records sent `early` go on.
  defp await(tag, ref, timeout, query, early) do
    receive do
      {^tag, ^ref, answer} ->
        answer

      {^tag, ^ref, answer, lines} ->
        Logger.debug(fn ->
          "[caravan] lookup of #{inspect(query)}: #{summary(answer)}; trace:\n  " <>
            Enum.join(lines, "\n  ")
        end)

        answer

      {:caravan_srv_early, ^ref, records} when is_function(early, 1) ->
        then(early.(records), fn _ -> await(tag, ref, timeout, query, nil) end)
    after
      timeout -> {:error, {:timeout, "no answer from Caravan's resolver within #{timeout} ms"}}
    end
  end

  @doc false
  # Looks up the addresses of `host` (a string) for `family` (`:inet`: A
  # records, `:inet6`: AAAA records) through the `:nameservers` option, and
  # waits for the answer. An IP literal of that family is returned without a
  # lookup. Options: `:nameservers`, `:timeout` (ms), as above; `:trace`
  # (default: whether this module's Logger level is set to :debug), false for
  # the epmd module's lookups, which must never log (they run inside
  # net_kernel's connection setup, also on the helper nodes of `bin/app
  # rpc|pid`, whose standard output is the command's result).
  #
  # Returns `{:ok, [ip_tuple]}` (at least one) or `{:error, {kind, message}}`
  # with the kinds of `lookup_srv/2`.
  #
  # {:ok, [{10, 0, 0, 1}]} =
  # Caravan.DNS.lookup_host("web1.node.dc1.consul", :inet, nameservers: ["127.0.0.1:8600"])
  @spec lookup_host(String.t(), :inet | :inet6, keyword()) ::
          {:ok, [:inet.ip_address()]} | {:error, reason()}
  def lookup_host(host, family, opts \\ [])

  def lookup_host(host, family, opts) when is_binary(host) and family in [:inet, :inet6] do
    {trace, opts} = Keyword.pop_lazy(opts, :trace, &trace?/0)

    with {:ok, %Options{} = o} <- Options.new(Keyword.delete(opts, :node_host)),
         nameservers = or_vm_nameservers(o.nameservers),
         {:ok, ref} <-
           Caravan.Native.host_lookup(host, family, nameservers, o.timeout, trace) do
      :caravan_host
      |> await(ref, o.timeout + @reply_grace, host, nil)
      |> name_the_asked(nameservers)
    end
  end

  def lookup_host(host, family, _opts),
    do:
      {:error,
       {:invalid_query,
        "expected a host name as a binary and :inet or :inet6, got: #{inspect({host, family})}"}}

  # Whether lookups are traced: only when asked for with
  # Logger.put_module_level(Caravan.DNS, :debug), not whenever the primary
  # level is :debug (a fresh app's). Otherwise no tracing subscriber exists.
  defp trace?, do: match?([{_, l}] when l in [:debug, :all], :logger.get_module_level(__MODULE__))

  defp summary({:ok, found}), do: "#{length(found)} answer(s)"
  defp summary({:error, {kind, message}}), do: "#{kind}: #{message}"

  @doc """
  The nameservers the VM was given, as `"IP:PORT"` strings, in the order
  they are asked:

  1. the `{nameserver, IP, Port}` and `{alt_nameserver, ...}` lines of the
     erl_inetrc file the VM was started with (`-kernel inetrc '"path"'`,
     else the `ERL_INETRC` environment variable; OTP's "Inet
     Configuration" guide), as Caravan 1.x's `:inet_res` lookups used them;
  2. then the VM resolver's other nameservers,
     `:inet_db.res_option(:nameservers)` and `:alt_nameservers` (which
     OTP may fill from `/etc/resolv.conf`: OTP re-reads resolv.conf when
     it changes and then replaces the erl_inetrc's lines there).

  `[]` when it has none; a lookup then asks the system's
  `/etc/resolv.conf`. So a 1.x config with an erl_inetrc and no
  `:nameservers` key works unchanged.
  """
  @spec vm_nameservers() :: [String.t()]
  def vm_nameservers, do: Enum.map(VmNameservers.parsed(), &Options.text/1)

  @doc """
  The nameservers a lookup given no `:nameservers` asks, `{source,
  ["IP:PORT"]}`: the epmd module's when set (source `"CARAVAN_NAMESERVERS"`
  or `"-caravan_nameservers"`, `Caravan.Epmd.Client`: one setting for host
  names and discovery), else the VM's (`"the VM's resolver"`,
  `vm_nameservers/0`), else none: `{"/etc/resolv.conf", []}`.
  """
  @spec default_nameservers() :: {String.t(), [String.t()]}
  def default_nameservers do
    {source, parsed} = VmNameservers.defaults()
    {source, Enum.map(parsed, &Options.text/1)}
  end

  @doc false
  defdelegate asked_text(parsed), to: VmNameservers

  defp or_vm_nameservers([]), do: elem(VmNameservers.defaults(), 1)
  defp or_vm_nameservers(nameservers), do: nameservers

  # A failed lookup's message names the nameservers asked (those the
  # native message does not name already), written from their parsed form.
  defp name_the_asked({:error, {kind, message}}, parsed)
       when kind not in [:nxdomain, :nodata, :invalid_query, :invalid_nameserver, :invalid_option] do
    nameservers = Enum.map(parsed, &Options.text/1)

    if nameservers != [] and Enum.all?(nameservers, &String.contains?(message, &1)) do
      {:error, {kind, message}}
    else
      asked =
        case nameservers do
          [] -> "the nameservers in /etc/resolv.conf"
          list -> Enum.join(list, ", ")
        end

      {:error, {kind, "#{message} (asked #{asked})"}}
    end
  end

  defp name_the_asked(answer, _nameservers), do: answer
end
