defmodule Caravan.Bench.Formation do
  @moduledoc """
  Row 4: cluster formation. N nodes (separate OS processes on 127.0.1.11..,
  all on distribution port 4700, Caravan's epmd module on every node) find
  each other through SRV records in dnsmasq and connect:

    * Caravan: `Caravan.Cluster.DnsStrategy` (native lookup, connects in
      parallel).
    * Alternative: `Caravan.Bench.DnsPollLike` (bench/peer_side.exs), a
      poller that works like libcluster's DNSPoll: `:inet_res` lookups with
      the node's resolver settings and no EDNS0, then one connect at a time.
    * Floor: every node connects in parallel to a list of all node names it
      is given up front (no DNS at all).

  The same booted nodes serve every round; between rounds every strategy is
  stopped and every connection dropped. A round starts the strategy on all N
  nodes at once; each node notes (OS clock, µs) when its strategy started
  and when it first saw the N-1 others connected. Formation time = last
  full view - last start. Same poll interval for both strategies.
  Median over the rounds, strategies alternating.
  """
  alias Caravan.Bench.{Log, Peers, Row, Stats}
  alias Caravan.Test.Dnsmasq

  @port 4700
  @poll_interval 1_000

  defp query(n), do: "_form#{n}._tcp.service.consul"
  defp host(i), do: "f#{i}.node.dc1.consul"
  defp ip(i), do: {127, 0, 1, 10 + i}

  @doc "dnsmasq's SRV records for clusters of each size in `sizes`."
  def srv_records(sizes), do: for(n <- sizes, i <- 1..n, do: {query(n), host(i), @port})

  @doc "dnsmasq's A records for the node hosts."
  def host_records(sizes),
    do: for(i <- 1..Enum.max(sizes), do: {host(i), ip(i) |> :inet.ntoa() |> to_string()})

  def run(%{quick: quick, dns: dns, formation_sizes: sizes, tmp: tmp}) do
    rounds = if quick, do: 3, else: 7
    inetrc = Dnsmasq.inetrc(dns, Path.join(tmp, "caravan_bench_inetrc"))
    max = Enum.max(sizes)
    Log.say("row 4: booting #{max} nodes")

    nodes =
      Peers.start_many(
        for i <- 1..max do
          [
            preload: true,
            # global warns of every connection the bench drops between rounds.
            log_level: :error,
            kind: :caravan,
            name: "bench-#{@port}",
            host: host(i),
            ip: ip(i),
            inetrc: inetrc
          ]
        end
      )

    try do
      for n <- sizes do
        members = Enum.take(nodes, n)

        times =
          for r <- 1..rounds,
              strategy <-
                if(rem(r, 2) == 1,
                  do: [:caravan, :dns_poll, :static],
                  else: [:static, :dns_poll, :caravan]
                ),
              reduce: %{} do
            acc ->
              ms = round(members, strategy, n)
              Log.say("row 4: N=#{n} round #{r} #{strategy}: #{ms} ms")
              Map.update(acc, strategy, [ms], &[ms | &1])
          end

        %Row{
          group: 4,
          metric: "formation time, #{n} nodes, median of #{rounds}",
          caravan: Stats.median(times.caravan),
          alt: Stats.median(times.dns_poll),
          floor: Stats.median(times.static),
          unit: "ms",
          better: :lower,
          target: if(n >= 16, do: {:vs_alt_above, 1.0}),
          note:
            "rounds (ms): Caravan #{inspect(Enum.reverse(times.caravan))}, DNSPoll-like #{inspect(Enum.reverse(times.dns_poll))}, static list #{inspect(Enum.reverse(times.static))}"
        }
      end
    after
      for {peer, _} <- nodes, do: Peers.stop(peer)
    end
  end

  # One round on `members`; returns the formation time in ms.
  defp round(members, strategy, n) do
    names = for {_, node} <- members, do: node

    opts =
      case strategy do
        :caravan ->
          [
            query: query(n),
            node_sname: "bench",
            nameservers: ["127.0.1.1:8700"],
            poll_interval: @poll_interval
          ]

        :dns_poll ->
          [query: query(n), node_sname: "bench", poll_interval: @poll_interval]

        :static ->
          [nodes: names]
      end

    starts =
      parallel(members, fn {peer, _} ->
        Peers.call(peer, Caravan.Bench.PeerSide, :start_round, [strategy, n - 1, opts])
      end)

    full_at = wait_for_mesh(members, System.monotonic_time(:millisecond) + 60_000)

    parallel(members, fn {peer, _} ->
      Peers.call(peer, Caravan.Bench.PeerSide, :stop_round, [])
    end)

    disconnect_all(members)

    max(0, Enum.max(full_at) - Enum.max(starts)) / 1000
  end

  defp wait_for_mesh(members, deadline) do
    full_at =
      parallel(members, fn {peer, _} -> Peers.call(peer, Caravan.Bench.PeerSide, :full_at, []) end)

    cond do
      Enum.all?(full_at, &is_integer/1) ->
        full_at

      System.monotonic_time(:millisecond) > deadline ->
        views =
          parallel(members, fn {peer, node} ->
            {node, length(Peers.call(peer, Node, :list, []))}
          end)

        raise "row 4: no full mesh within 60 s: #{inspect(views)}"

      true ->
        Process.sleep(50)
        wait_for_mesh(members, deadline)
    end
  end

  defp disconnect_all(members, tries \\ 100) do
    parallel(members, fn {peer, _} ->
      Peers.call(peer, Caravan.Bench.PeerSide, :disconnect_all, [])
    end)

    Process.sleep(50)

    cond do
      Enum.all?(parallel(members, fn {peer, _} -> Peers.call(peer, Node, :list, []) == [] end)) ->
        :ok

      tries == 0 ->
        raise "row 4: nodes still connected after the round"

      true ->
        disconnect_all(members, tries - 1)
    end
  end

  defp parallel(members, fun) do
    members
    |> Task.async_stream(fun, max_concurrency: length(members), timeout: 120_000, ordered: true)
    |> Enum.map(fn {:ok, result} -> result end)
  end
end
