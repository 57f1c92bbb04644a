defmodule Caravan.Cluster.Config.Values do
  @moduledoc false
  # One job: the checks of a topology config (Caravan.Cluster.Config): the
  # keys it accepts (with the aliases of Caravan 1.x and libcluster DNSPoll,
  # an unknown key refused with the nearest known one) and the value of
  # each, as {:ok, value} or {:error, {:invalid_option, message}}, the
  # message naming the key, the value and what was expected.

  @type error :: {:error, {:invalid_option, String.t()}}

  # Every key the strategy reads; anything else is a typo or a key of
  # another strategy, refused so that it never passes silently.
  @known_keys ~w(query consul_service node_sname node_host poll_interval nameservers timeout
                 prune max_nodes connect_timeout connect_concurrency dns_client topology
                 connect disconnect list_nodes report_interval record_type node_basename
                 polling_interval leave_after node_port)a

  # The config keys a topology accepts (see Caravan.Cluster.DnsStrategy).
  @spec known() :: [atom()]
  def known, do: @known_keys

  # Reads the aliases as their keys: Caravan 1.x's first releases called
  # the query :consul_service; libcluster's DNSPoll calls the interval
  # :polling_interval. The key itself wins when both are given.
  @spec aliases(keyword()) :: keyword()
  def aliases(opts) do
    opts = Keyword.put_new_lazy(opts, :query, fn -> opts[:consul_service] end)

    if Keyword.has_key?(opts, :polling_interval),
      do: Keyword.put_new(opts, :poll_interval, opts[:polling_interval]),
      else: opts
  end

  # :ok, or {:error, {:invalid_option, message}} naming every unknown key
  # (with the nearest known one, if near) and the known keys.
  @spec check(keyword()) :: :ok | {:error, {:invalid_option, String.t()}}
  def check(opts) do
    case Enum.uniq(for {key, _} <- opts, key not in @known_keys, do: key) do
      [] ->
        :ok

      unknown ->
        message =
          Enum.map_join(unknown, "; ", fn key ->
            "unknown key #{inspect(key)}" <>
              case nearest(key) do
                nil -> ""
                near -> "; did you mean #{inspect(near)}?"
              end
          end) <> " (known keys: #{Enum.map_join(@known_keys, ", ", &inspect/1)})"

        {:error, {:invalid_option, message}}
    end
  end

  # The known key nearest to `key` (String.jaro_distance/2), if near at
  # all (0.7 or more), else nil.
  @spec nearest(atom()) :: atom() | nil
  def nearest(key) do
    name = to_string(key)
    near = Enum.max_by(@known_keys, &String.jaro_distance(name, to_string(&1)))
    if String.jaro_distance(name, to_string(near)) >= 0.7, do: near
  end

  # `key`'s value in `opts`, else `default`; missing (nil) or refused by
  # `valid?` is an error naming `expected`.
  @spec fetch(keyword(), atom(), term(), (term() -> boolean()), String.t()) ::
          {:ok, term()} | error()
  def fetch(opts, key, default, valid?, expected) do
    case Keyword.get(opts, key, default) do
      nil ->
        invalid("missing #{inspect(key)}; expected #{expected}")

      value ->
        if valid?.(value),
          do: {:ok, value},
          else: invalid("invalid #{inspect(key)}: #{inspect(value)}; expected #{expected}")
    end
  end

  # SRV records name nodes "<node_sname>-<port>@<target>"; A/AAAA records
  # "<node_basename>@<ip>" (libcluster DNSPoll, dns_cluster), the basename
  # defaulting to this node's name part as dns_cluster does. Returns
  # {:ok, node_sname, node_basename}, one of them nil.
  @spec names(keyword(), :srv | :a | :aaaa | :ip) ::
          {:ok, String.t() | nil, String.t() | nil} | error()
  def names(opts, :srv) do
    with {:ok, sname} <-
           fetch(opts, :node_sname, nil, &sname/1, "a string matching ^[0-9A-Za-z_-]+$"),
         do: {:ok, sname, nil}
  end

  def names(opts, record_type) do
    expected =
      "a string matching ^[0-9A-Za-z_-]+$ whose trailing digits, if any, are a port " <>
        "in 1..65535 (\"app\" listens on 4370, \"app-4371\" on 4371)"

    default = if Node.alive?(), do: node() |> Atom.to_string() |> String.split("@") |> hd()

    case fetch(opts, :node_basename, default, &basename?/1, expected) do
      {:ok, basename} ->
        {:ok, nil, basename}

      {:error, {_kind, "missing " <> _}} ->
        invalid(
          "missing :node_basename; expected #{expected} (record_type: #{inspect(record_type)} " <>
            "names nodes <node_basename>@<ip>; it defaults to this node's name part, but this " <>
            "node is not distributed)"
        )

      error ->
        error
    end
  end

  # :name (the port from the node name) or :srv (nodes named
  # "<node_sname>@<host>", dialed on their SRV record's port); with :srv the
  # node_sname must not end in a digit, which would read as a port.
  @spec node_port(keyword(), String.t() | nil, :name) :: {:ok, :name | :srv} | error()
  def node_port(opts, sname, default) do
    case fetch(opts, :node_port, default, &(&1 in [:name, :srv]), ":name or :srv") do
      {:ok, :srv} when sname == nil ->
        invalid("invalid :node_port: :srv; it applies to SRV records only (record_type: :srv)")

      {:ok, :srv} ->
        if String.match?(sname, ~r/[0-9]\z/),
          do:
            invalid(
              "invalid :node_sname: #{inspect(sname)} with node_port: :srv; expected a name " <>
                "that does not end in a digit (nodes are named <node_sname>@<host>, and " <>
                "trailing digits would read as a port)"
            ),
          else: {:ok, :srv}

      other ->
        other
    end
  end

  # A custom :dns_client answers SRV queries; A/AAAA lookups are Caravan's own.
  @spec client_for(:srv | :a | :aaaa | :ip, keyword()) :: :ok | error()
  def client_for(:srv, _opts), do: :ok

  def client_for(record_type, opts) do
    if Keyword.has_key?(opts, :dns_client),
      do:
        invalid(
          "invalid :dns_client: #{inspect(opts[:dns_client])} with record_type: " <>
            "#{inspect(record_type)}; a :dns_client answers SRV lookups only (record_type: " <>
            ":srv); remove it to look up A/AAAA records natively"
        ),
      else: :ok
  end

  @spec invalid(String.t()) :: error()
  def invalid(message), do: {:error, {:invalid_option, message}}

  # An error of another module's check (Caravan.DNS.Options), prefixed
  # with the key it was about.
  @spec prefix({:ok, term()} | {:error, {atom(), String.t()}}, atom()) :: {:ok, term()} | error()
  def prefix({:error, {_kind, message}}, key),
    do: invalid("invalid #{inspect(key)}: " <> message)

  def prefix(ok, _key), do: ok

  # The predicates the keys are checked with.
  @spec queries?(term()) :: boolean()
  def queries?([_ | _] = list), do: Enum.all?(list, &non_empty_string/1)
  def queries?(value), do: non_empty_string(value)

  @spec pos_int(term()) :: boolean()
  def pos_int(value), do: is_integer(value) and value > 0

  @spec mfa?(term()) :: boolean()
  def mfa?({m, f, a}), do: is_atom(m) and is_atom(f) and is_list(a)
  def mfa?(_), do: false

  @spec dns_client?(term()) :: boolean()
  def dns_client?(module) do
    is_atom(module) and Code.ensure_loaded?(module) and
      (function_exported?(module, :get_nodes, 1) or function_exported?(module, :get_nodes, 2))
  end

  defp non_empty_string(value), do: is_binary(value) and String.trim(value) != ""
  defp sname(value), do: is_binary(value) and value =~ ~r/\A[0-9A-Za-z_-]+\z/

  defp basename?(value),
    do: sname(value) and match?({:ok, _}, Caravan.Epmd.fetch_dist_port(value <> "@h"))
end
