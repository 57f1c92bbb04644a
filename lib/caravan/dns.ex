defmodule Caravan.DNS do
  @moduledoc """
  SRV lookups (RFC 2782) done natively: a hickory resolver on a tokio
  runtime inside the NIF, so a lookup never blocks a BEAM scheduler.

      {:ok, records} = Caravan.DNS.lookup_srv("_app._tcp.service.consul", nameservers: ["127.0.0.1:8600"])
      # records: [%{priority: 1, weight: 1, port: 4370, target: "web1.node.dc1.consul",
      #             addresses: [{10, 0, 0, 1}], host: "web1.node.dc1.consul"}, ...]

  Queries use EDNS0 (1232-byte payload) and retry over TCP when an answer is
  truncated. Answers are not cached, so a changed service is seen at once.

  ## Options

    * `:nameservers` - nameservers to ask, in order: `"IP"` (port 53),
      `"IP:PORT"` (`"127.0.0.1:8600"` for a Consul agent), `"[IPv6]:PORT"`,
      or Caravan 1.x's `{"IP", port}` tuples (port an integer or a string).
      Default `[]`: the system's `/etc/resolv.conf`.
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
  and `:invalid_option` name the bad argument. Every kind is listed in
  `t:Caravan.error_kind/0`.
  """

  require Logger
  alias Caravan.DNS.Options

  # How long past its own bound the caller waits for the native reply.
  @reply_grace 1_000

  @typedoc """
  One SRV record. `target` has no trailing dot; `addresses` are the
  target's addresses from the answer's additional section (or resolved,
  with `node_host: :ip`); `host` is the host part of the node name under
  `:node_host`, `nil` when `node_host: :ip` found no address.
  """
  @type record :: %{
          priority: 0..65_535,
          weight: 0..65_535,
          port: 0..65_535,
          target: String.t(),
          addresses: [:inet.ip_address()],
          host: String.t() | nil
        }

  @type reason :: Caravan.error()

  @doc """
  Looks up the SRV records of `query` and waits for the answer.

  Returns `{:ok, [record]}` (at least one record) or `{:error, {kind, message}}`
  (see the module doc). Returns within `:timeout` ms plus a short grace.
  """
  @spec lookup_srv(String.t(), keyword()) :: {:ok, [record()]} | {:error, reason()}
  def lookup_srv(query, opts \\ []) do
    with {:ok, ref, timeout} <- start(query, opts, trace?()) do
      await(:caravan_srv, ref, timeout + @reply_grace, query)
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
    with {:ok, ref, _timeout} <- start(query, opts, false), do: {:ok, ref}
  end

  # Validates the arguments once and starts the native lookup:
  # {:ok, ref, timeout_ms} or {:error, reason}.
  defp start(query, opts, trace) when is_binary(query) and is_list(opts) do
    with {:ok, %Options{} = o} <- Options.new(opts),
         {:ok, ref} <-
           Caravan.Native.srv_lookup(query, o.nameservers, o.timeout, o.node_host, trace) do
      {:ok, ref, o.timeout}
    end
  end

  defp start(query, _opts, _trace),
    do: {:error, {:invalid_query, "expected the query as a binary, got: #{inspect(query)}"}}

  @doc false
  # Waits up to `timeout` ms for the answer to `lookup_srv_async/2`.
  #
  # Returns the answer, or `{:error, {:timeout, message}}`; a reply that
  # arrives later stays in the mailbox as `{:caravan_srv, ref, _}`.
  @spec await(reference(), timeout()) :: {:ok, [record()]} | {:error, reason()}
  def await(ref, timeout), do: await(:caravan_srv, ref, timeout, nil)

  # A traced reply carries the lookup's tracing events (hickory's and
  # Caravan's: the nameservers asked, retries, truncation and the switch to
  # TCP), logged here at debug as one entry.
  defp await(tag, ref, timeout, query) do
    receive do
      {^tag, ^ref, answer} ->
        answer

      {^tag, ^ref, answer, lines} ->
        Logger.debug(fn ->
          "[caravan] lookup of #{inspect(query)}: #{summary(answer)}; trace:\n  " <>
            Enum.join(lines, "\n  ")
        end)

        answer
    after
      timeout -> {:error, {:timeout, "no answer from Caravan's resolver within #{timeout} ms"}}
    end
  end

  @doc false
  # Looks up the addresses of `host` (a string) for `family` (`:inet`: A
  # records, `:inet6`: AAAA records) through the `:nameservers` option, and
  # waits for the answer. An IP literal of that family is returned without a
  # lookup. Options: `:nameservers`, `:timeout` (ms), as above.
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
    with {:ok, %Options{} = o} <- Options.new(Keyword.delete(opts, :node_host)),
         {:ok, ref} <-
           Caravan.Native.host_lookup(host, family, o.nameservers, o.timeout, trace?()) do
      await(:caravan_host, ref, o.timeout + @reply_grace, host)
    end
  end

  def lookup_host(host, family, _opts),
    do:
      {:error,
       {:invalid_query,
        "expected a host name as a binary and :inet or :inet6, got: #{inspect({host, family})}"}}

  # Whether lookups are traced: only when Logger would print debug entries
  # of this module (the primary level, or a module level set with
  # Logger.put_module_level/2). Otherwise no tracing subscriber exists.
  defp trace?, do: :logger.allow(:debug, __MODULE__)

  defp summary({:ok, found}), do: "#{length(found)} answer(s)"
  defp summary({:error, {kind, message}}), do: "#{kind}: #{message}"
end
