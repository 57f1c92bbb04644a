defmodule Caravan.DNS do
  @moduledoc """
  SRV lookups (RFC 2782) done natively: a hickory resolver on a tokio
  runtime inside the NIF, so a lookup never blocks a BEAM scheduler.

      {:ok, records} = Caravan.DNS.lookup_srv("_app._tcp.service.consul", nameservers: ["127.0.0.1:8600"])
      # records: [%{priority: 1, weight: 1, port: 4370, target: "web1.node.dc1.consul"}, ...]

  Queries use EDNS0 (1232-byte payload) and retry over TCP when an answer is
  truncated. Answers are not cached, so a changed service is seen at once.

  ## Options

    * `:nameservers` - nameservers to ask, in order: `"IP"` (port 53),
      `"IP:PORT"` (`"127.0.0.1:8600"` for a Consul agent), `"[IPv6]:PORT"`,
      or Caravan 1.x's `{"IP", port}` tuples (port an integer or a string).
      Default `[]`: the system's `/etc/resolv.conf`.
    * `:timeout` - bound on the whole lookup, retries and TCP included, in
      ms. Default #{2_000}.

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

  @typedoc "One SRV record; `target` has no trailing dot."
  @type record :: %{
          priority: 0..65_535,
          weight: 0..65_535,
          port: 0..65_535,
          target: String.t()
        }

  @type reason :: {atom(), String.t()}

  @doc """
  Looks up the SRV records of `query` and waits for the answer.

  Returns `{:ok, [record]}` (at least one record) or `{:error, {kind, message}}`
  (see the module doc). Returns within `:timeout` ms plus a short grace.
  """
  @spec lookup_srv(String.t(), keyword()) :: {:ok, [record()]} | {:error, reason()}
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
         {:ok, ref} <- Caravan.Native.srv_lookup(query, nameservers, timeout) do
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
  @spec await(reference(), timeout()) :: {:ok, [record()]} | {:error, reason()}
  def await(ref, timeout) do
    receive do
      {:caravan_srv, ^ref, answer} -> answer
    after
      timeout -> {:error, {:timeout, "no answer from Caravan's resolver within #{timeout} ms"}}
    end
  end

  @doc """
  Normalises the `:nameservers` option to `"IP:PORT"` strings.

      iex> Caravan.DNS.nameservers(nameservers: ["127.0.0.1:8600", {"10.0.0.2", "8600"}, {{10, 0, 0, 3}, 53}])
      {:ok, ["127.0.0.1:8600", "10.0.0.2:8600", "10.0.0.3:53"]}
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
        :error -> {:halt, {:error, {:invalid_nameserver, invalid_nameserver(ns)}}}
      end
    end)
    |> case do
      {:ok, list} -> {:ok, Enum.reverse(list)}
      error -> error
    end
  end

  defp nameserver(text) when is_binary(text), do: {:ok, text}

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
