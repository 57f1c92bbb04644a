defmodule Mix.Tasks.Caravan.Lookup do
  @shortdoc "Prints the SRV records of a query and the node names they give"
  @moduledoc """
  The `dig` to reach for when a cluster does not form: looks up the SRV
  records of `QUERY` with Caravan's resolver (EDNS0, TCP when the UDP
  answer may be incomplete, no cache) and prints each record with the node name
  `Caravan.Cluster.DnsStrategy` would connect to, or why it would skip it.

      $ mix caravan.lookup _app._tcp.service.consul --nameserver 127.0.0.1:8600 --node-sname app
      PRIO  WEIGHT  PORT  TARGET                    ADDRESSES  NODE
      1     1       4370  web1.node.dc1.consul      10.0.0.1   app-4370@web1.node.dc1.consul
      1 records, answered over udp

  Every record of the answer is listed. The last line says which transport
  gave the answer: `udp`, or `tcp` when the UDP answer was truncated or may
  have been trimmed silently (Consul) and was asked again over TCP.

  Options:

    * `--nameserver IP[:PORT]` - repeatable; default the VM's nameservers
      (an erl_inetrc), else the system's resolv.conf.
    * `--node-sname NAME` - the name part of the node names. Default: the
      first label of the query without its leading `_` (`app` above).
    * `--node-host auto|target|ip` - as the strategy's `:node_host`.
      Default `auto`.
    * `--timeout MS` - bound on the lookup. Default #{Caravan.DNS.Options.default_timeout()}.

  Exits with status 1 and the typed error (`nxdomain`, `timeout`, ...)
  when the lookup fails.
  """
  use Mix.Task

  @switches [nameserver: :keep, node_sname: :string, node_host: :string, timeout: :integer]

  @impl Mix.Task
  def run(args) do
    case OptionParser.parse(args, strict: @switches) do
      {opts, [query], []} -> lookup(query, opts)
      _ -> Mix.raise("usage: " <> usage())
    end
  end

  defp lookup(query, opts) do
    Mix.Task.run("compile")
    sname = opts[:node_sname] || default_sname(query)

    lookup_opts = [
      nameservers: Keyword.get_values(opts, :nameserver),
      timeout: opts[:timeout] || Caravan.DNS.Options.default_timeout(),
      node_host: node_host(opts[:node_host] || "auto")
    ]

    case Caravan.DNS.lookup_srv(query, lookup_opts) do
      {:ok, records} ->
        rows =
          records |> Enum.sort_by(&{&1.priority, &1.target, &1.port}) |> Enum.map(&row(&1, sname))

        print([["PRIO", "WEIGHT", "PORT", "TARGET", "ADDRESSES", "NODE"] | rows])

        Mix.shell().info(
          "#{length(records)} records, answered over #{transport(records)}" <>
            case hd(records) do
              %{name: name} -> " (as #{name}, from the search list)"
              _ -> ""
            end
        )

      {:error, {kind, message}} ->
        Mix.raise("lookup of #{inspect(query)} failed: #{kind}: #{message}")
    end
  end

  defp transport([%{transport: transport} | _]), do: transport
  defp transport(_records), do: "unknown transport"

  defp row(record, sname) do
    node =
      case record.host && Caravan.Epmd.node_name(sname, record.port, record.host) do
        {:ok, node} -> Atom.to_string(node)
        {:error, {kind, message}} -> "skipped (#{kind}: #{message})"
        nil -> "skipped (no IP address for this target)"
      end

    addresses =
      case record.addresses do
        [] -> "-"
        ips -> Enum.map_join(ips, ",", &to_string(:inet.ntoa(&1)))
      end

    [record.priority, record.weight, record.port, record.target, addresses, node]
    |> Enum.map(&to_string/1)
  end

  defp print(rows) do
    widths =
      rows
      |> Enum.zip_with(& &1)
      |> Enum.map(fn column -> column |> Enum.map(&String.length/1) |> Enum.max() end)

    Enum.each(rows, fn row ->
      row
      |> Enum.zip(widths)
      |> Enum.map_join("  ", fn {cell, width} -> String.pad_trailing(cell, width) end)
      |> String.trim_trailing()
      |> Mix.shell().info()
    end)
  end

  defp node_host(mode) when mode in ["auto", "target", "ip"], do: String.to_atom(mode)
  defp node_host(mode), do: Mix.raise("--node-host #{inspect(mode)}: expected auto, target or ip")

  defp default_sname(query) do
    query |> String.split(".") |> hd() |> String.trim_leading("_")
  end

  defp usage,
    do:
      "mix caravan.lookup QUERY [--nameserver IP:PORT]... [--node-sname NAME] " <>
        "[--node-host auto|target|ip] [--timeout MS]"
end
