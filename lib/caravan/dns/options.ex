defmodule Caravan.DNS.Options do
  @moduledoc false
  # The lookup options, validated once, in one place, into a typed struct:
  # `:nameservers`, `:timeout` (ms) and `:node_host`, with their defaults.
  # Caravan.DNS, the strategy's Config, the boot-time HostResolver and
  # `mix caravan.lookup` all come through here; the NIFs then trust them.
  # Nameserver strings are parsed once, here, by the native parser
  # (`Caravan.Native.nameserver/1`), into `{ip_tuple, port}`: the form the
  # lookup NIFs take and the strategy's Config keeps, so a lookup parses no
  # text. `text/1` and `nameservers/1` write them as `"IP:PORT"` for people.

  @default_timeout 2_000

  defstruct nameservers: [], timeout: @default_timeout, node_host: :auto

  @type node_host :: :auto | :target | :ip
  @type nameserver :: {:inet.ip_address(), 1..65_535}
  @type t :: %__MODULE__{
          nameservers: [nameserver()],
          timeout: pos_integer(),
          node_host: node_host()
        }

  @doc "The default bound on one lookup, in ms: #{@default_timeout}."
  @spec default_timeout() :: pos_integer()
  def default_timeout, do: @default_timeout

  @doc """
  Validates `:nameservers` (parsed, `parse/1`), `:timeout` and
  `:node_host` in `opts` (other keys are ignored). Returns `{:ok, t}` or `{:error, {kind, message}}`
  (`:invalid_nameserver` or `:invalid_option`) naming the bad value.
  """
  @spec new(keyword()) :: {:ok, t()} | {:error, Caravan.error()}
  def new(opts) when is_list(opts) do
    with {:ok, timeout} <- timeout(Keyword.get(opts, :timeout, @default_timeout)),
         {:ok, nameservers} <- parse(Keyword.get(opts, :nameservers, [])),
         {:ok, node_host} <- node_host(Keyword.get(opts, :node_host, :auto)) do
      {:ok, %__MODULE__{nameservers: nameservers, timeout: timeout, node_host: node_host}}
    end
  end

  def new(opts),
    do:
      {:error, {:invalid_option, "expected the options as a keyword list, got: #{inspect(opts)}"}}

  @doc """
  Checks and normalises nameservers to `"IP:PORT"` strings (port 53 when a
  string gives none), for configs and messages: `parse/1`, then `text/1`.
  """
  @spec nameservers(term()) :: {:ok, [String.t()]} | {:error, Caravan.error()}
  def nameservers(list) do
    with {:ok, parsed} <- parse(list), do: {:ok, Enum.map(parsed, &text/1)}
  end

  @doc """
  Parses nameservers into `{ip_tuple, port}`, the form the lookup NIFs
  take: `"IP"` (port 53), `"IP:PORT"`, `"[IPv6]:PORT"` (parsed by the
  native parser, `caravan_core::resolver::parse_nameserver`), or Caravan
  1.x's `{"IP", port}` / `{ip_tuple, port}` (port an integer or a string).
  One nameserver may be given without a list. `{ip_tuple, port}` passes
  through with no text parsed.
  """
  @spec parse(term()) :: {:ok, [nameserver()]} | {:error, Caravan.error()}
  def parse(list) do
    list
    |> List.wrap()
    |> Enum.reduce_while({:ok, []}, fn ns, {:ok, acc} ->
      case nameserver(ns) do
        {:ok, parsed} -> {:cont, {:ok, [parsed | acc]}}
        {:error, message} -> {:halt, {:error, {:invalid_nameserver, message}}}
        :error -> {:halt, {:error, {:invalid_nameserver, invalid_nameserver(ns)}}}
      end
    end)
    |> case do
      {:ok, list} -> {:ok, Enum.reverse(list)}
      error -> error
    end
  end

  @doc """
  A parsed nameserver as text: `"IP:PORT"`, `"[IPv6]:PORT"` (IPv6 as
  `:inet.ntoa/1` writes it, RFC 5952).
  """
  @spec text(nameserver()) :: String.t()
  def text({ip, port}) when tuple_size(ip) == 8, do: "[#{:inet.ntoa(ip)}]:#{port}"
  def text({ip, port}), do: "#{:inet.ntoa(ip)}:#{port}"

  defp nameserver(text) when is_binary(text) do
    case Caravan.Native.nameserver(text) do
      {:ok, parsed} -> {:ok, parsed}
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
    if :inet.is_ip_address(ip), do: {:ok, {ip, port}}, else: :error
  end

  defp nameserver(_), do: :error

  defp invalid_nameserver(ns),
    do:
      "invalid nameserver #{inspect(ns)}; expected \"IP\", \"IP:PORT\", {\"IP\", port} or {ip_tuple, port}"

  @doc "`{:ok, mode}` for `:auto`, `:target` or `:ip`, else `{:error, {:invalid_option, _}}`."
  @spec node_host(term()) :: {:ok, node_host()} | {:error, Caravan.error()}
  def node_host(mode) when mode in [:auto, :target, :ip], do: {:ok, mode}

  def node_host(other),
    do:
      {:error,
       {:invalid_option, "expected :node_host as :auto, :target or :ip, got: #{inspect(other)}"}}

  @doc "`{:ok, ms}` for a positive integer, else `{:error, {:invalid_option, _}}`."
  @spec timeout(term()) :: {:ok, pos_integer()} | {:error, Caravan.error()}
  def timeout(ms) when is_integer(ms) and ms > 0, do: {:ok, ms}

  def timeout(other),
    do:
      {:error,
       {:invalid_option, "expected :timeout as a positive integer (ms), got: #{inspect(other)}"}}
end
