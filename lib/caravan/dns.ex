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
      ms. Default #{2_000}.
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
  `:internal` means Caravan's native code failed (a bug; the message says
  where). `:invalid_query`,
  `:invalid_nameserver` and `:invalid_option` name the bad argument.
  """

  @default_timeout 2_000
  # How long past its own bound the caller waits for the native reply.
  @reply_grace 1_000

  @typedoc """
  One SRV record. `target` has no trailing dot; `addresses` are the
  target's addresses from the answer's additional section (or resolved,
  with `node_host: :ip`); `host` is the host part of the node name under
  `:node_host`, `nil` when `node_host: :ip` found no address.
  """
  @type srv_record :: %{
          priority: 0..65_535,
          weight: 0..65_535,
          port: 0..65_535,
          target: String.t(),
          addresses: [:inet.ip_address()],
          host: String.t() | nil
        }

  @type reason :: {atom(), String.t()}

  @doc """
  Looks up the SRV records of `query` and waits for the answer.

  Returns `{:ok, [record]}` (at least one record) or `{:error, {kind, message}}`
  (see the module doc). Returns within `:timeout` ms plus a short grace.
  """
  @spec lookup_srv(String.t(), keyword()) :: {:ok, [srv_record()]} | {:error, reason()}
  def lookup_srv(query, opts \\ []) do
    with {:ok, ref, timeout} <- start(query, opts) do
      await(ref, timeout + @reply_grace)
    end
  end

  @doc """
  Starts an SRV lookup and returns `{:ok, ref}` at once (the NIF call takes
  microseconds). The calling process later receives exactly one message
  `{:caravan_srv, ref, {:ok, [record]} | {:error, {kind, message}}}` within
  `:timeout` ms.

  Returns `{:error, {kind, message}}` at once for an invalid query, option
  or nameserver.
  """
  @spec lookup_srv_async(String.t(), keyword()) :: {:ok, reference()} | {:error, reason()}
  def lookup_srv_async(query, opts \\ [])

  def lookup_srv_async(query, opts) do
    with {:ok, ref, _timeout} <- start(query, opts), do: {:ok, ref}
  end

  # Validates the arguments once and starts the native lookup:
  # {:ok, ref, timeout_ms} or {:error, reason}.
  defp start(query, opts) when is_binary(query) and is_list(opts) do
    with {:ok, timeout} <- timeout(opts),
         {:ok, nameservers} <- nameservers(opts),
         {:ok, node_host} <- node_host(opts),
         {:ok, ref} <- Caravan.Native.srv_lookup(query, nameservers, timeout, node_host) do
      {:ok, ref, timeout}
    end
  end

  defp start(query, _opts),
    do: {:error, {:invalid_query, "expected the query as a binary, got: #{inspect(query)}"}}

  @doc """
  Waits up to `timeout` ms for the answer to `lookup_srv_async/2`.

  Returns the answer, or `{:error, {:timeout, message}}`; a reply that
  arrives later stays in the mailbox as `{:caravan_srv, ref, _}`.
  """
  @spec await(reference(), timeout()) :: {:ok, [srv_record()]} | {:error, reason()}
  def await(ref, timeout), do: await(:caravan_srv, ref, timeout)

  defp await(tag, ref, timeout) do
    receive do
      {^tag, ^ref, answer} -> answer
    after
      timeout -> {:error, {:timeout, "no answer from Caravan's resolver within #{timeout} ms"}}
    end
  end

  @doc """
  Looks up the addresses of `host` (a string) for `family` (`:inet`: A
  records, `:inet6`: AAAA records) through the `:nameservers` option, and
  waits for the answer. An IP literal of that family is returned without a
  lookup. Options: `:nameservers`, `:timeout` (ms), as above.

  Returns `{:ok, [ip_tuple]}` (at least one) or `{:error, {kind, message}}`
  with the kinds of `lookup_srv/2`.

      {:ok, [{10, 0, 0, 1}]} =
        Caravan.DNS.lookup_host("web1.node.dc1.consul", :inet, nameservers: ["127.0.0.1:8600"])
  """
  @spec lookup_host(String.t(), :inet | :inet6, keyword()) ::
          {:ok, [:inet.ip_address()]} | {:error, reason()}
  def lookup_host(host, family, opts \\ [])

  def lookup_host(host, family, opts) when is_binary(host) and family in [:inet, :inet6] do
    with {:ok, timeout} <- timeout(opts),
         {:ok, nameservers} <- nameservers(opts),
         {:ok, ref} <- Caravan.Native.host_lookup(host, family, nameservers, timeout) do
      await(:caravan_host, ref, timeout + @reply_grace)
    end
  end

  def lookup_host(host, family, _opts),
    do:
      {:error,
       {:invalid_query,
        "expected a host name as a binary and :inet or :inet6, got: #{inspect({host, family})}"}}

  @doc """
  Checks and normalises the `:nameservers` option to `"IP:PORT"` strings
  (port 53 when a string gives none), with the same parser the lookups use.

  Returns `{:ok, [String.t()]}` or `{:error, {:invalid_nameserver, message}}`
  naming the bad entry.

      iex> Caravan.DNS.nameservers(nameservers: ["127.0.0.1:8600", "10.0.0.1", {"10.0.0.2", "8600"}, {{10, 0, 0, 3}, 53}])
      {:ok, ["127.0.0.1:8600", "10.0.0.1:53", "10.0.0.2:8600", "10.0.0.3:53"]}
      iex> Caravan.DNS.nameservers(nameservers: ["consul:8600"])
      {:error, {:invalid_nameserver, ~s(invalid nameserver "consul:8600"; expected "IP" or "IP:PORT", e.g. "127.0.0.1:8600" or "[::1]:53")}}
      iex> Caravan.DNS.nameservers(nameservers: [:consul])
      {:error, {:invalid_nameserver, ~s(invalid nameserver :consul; expected "IP", "IP:PORT", {"IP", port} or {ip_tuple, port})}}
  """
  @spec nameservers(keyword()) :: {:ok, [String.t()]} | {:error, reason()}
  def nameservers(opts) do
    opts
    |> Keyword.get(:nameservers, [])
    |> List.wrap()
    |> Enum.reduce_while({:ok, []}, fn ns, {:ok, acc} ->
      case nameserver(ns) do
        {:ok, text} -> {:cont, {:ok, [text | acc]}}
        {:error, message} -> {:halt, {:error, {:invalid_nameserver, message}}}
        :error -> {:halt, {:error, {:invalid_nameserver, invalid_nameserver(ns)}}}
      end
    end)
    |> case do
      {:ok, list} -> {:ok, Enum.reverse(list)}
      error -> error
    end
  end

  defp nameserver(text) when is_binary(text) do
    case Caravan.Native.nameserver(text) do
      {:ok, normalised} -> {:ok, normalised}
      {:error, {:invalid_nameserver, message}} -> {:error, message}
    end
  end

  defp nameserver({ip, port}) when is_binary(port) do
    case Integer.parse(port) do
      {port, ""} -> nameserver({ip, port})
      _ -> :error
    end
  end

  defp nameserver({ip, port}) when is_binary(ip) and port in 1..65_535 do
    case :inet.parse_address(String.to_charlist(ip)) do
      {:ok, ip} -> nameserver({ip, port})
      {:error, _} -> :error
    end
  end

  defp nameserver({ip, port}) when is_tuple(ip) and port in 1..65_535 do
    case :inet.ntoa(ip) do
      {:error, _} -> :error
      text when tuple_size(ip) == 8 -> {:ok, "[#{text}]:#{port}"}
      text -> {:ok, "#{text}:#{port}"}
    end
  end

  defp nameserver(_), do: :error

  defp invalid_nameserver(ns),
    do:
      "invalid nameserver #{inspect(ns)}; expected \"IP\", \"IP:PORT\", {\"IP\", port} or {ip_tuple, port}"

  defp node_host(opts) do
    case Keyword.get(opts, :node_host, :auto) do
      mode when mode in [:auto, :target, :ip] ->
        {:ok, mode}

      other ->
        {:error,
         {:invalid_option, "expected :node_host as :auto, :target or :ip, got: #{inspect(other)}"}}
    end
  end

  defp timeout(opts) do
    case Keyword.get(opts, :timeout, @default_timeout) do
      ms when is_integer(ms) and ms > 0 ->
        {:ok, ms}

      other ->
        {:error,
         {:invalid_option, "expected :timeout as a positive integer (ms), got: #{inspect(other)}"}}
    end
  end
end
