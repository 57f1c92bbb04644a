defmodule Caravan.Cluster.Config.Keys do
  @moduledoc false
  # One job: the key list of a topology config (Caravan.Cluster.Config):
  # the keys the strategy reads, the aliases of Caravan 1.x and libcluster
  # DNSPoll, and unknown keys refused with the nearest known one.

  # Every key the strategy reads; anything else is a typo or a key of
  # another strategy, refused so that it never passes silently.
  @known_keys ~w(query consul_service node_sname node_host poll_interval nameservers timeout
                 prune max_nodes connect_timeout connect_concurrency dns_client topology
                 connect disconnect list_nodes report_interval record_type node_basename
                 polling_interval leave_after)a

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
end
