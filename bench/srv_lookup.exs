defmodule Caravan.Bench.SrvLookup do
  @moduledoc """
  Row 2: SRV lookups against a real dnsmasq on 127.0.1.1:8700, for answers of
  3, 50 and 500 records.

    * Caravan: `Caravan.DNS.lookup_srv/2` (hickory on the NIF's tokio
      runtime; EDNS0 with 1232 bytes, TCP when the answer is truncated).
    * Alternative: `:inet_res.resolve/4` with the same nameserver and EDNS
      settings (`edns: 0, udp_payload_size: 1232`); it also retries over TCP
      when the answer is truncated.
    * Floor: a pre-encoded query (same EDNS0 OPT record) sent on an open UDP
      socket, waiting for the reply bytes, no decoding. 50 and 500 records
      do not fit in 1232 bytes: there the floor's reply is the truncated
      one, and both Caravan and `:inet_res` go on over TCP.

  Every Caravan and `:inet_res` answer is checked for the full record count,
  so a truncated answer can never look fast.
  """
  alias Caravan.Bench.{Log, PeerSide, Row, Stats}

  @sizes [3, 50, 500]
  # Throughput rounds per implementation (--quick: 1).
  @rounds 3

  # Lookups in the throughput runs give up after this many ms (a UDP packet
  # dropped under load costs this much), so a run ends soon after its window.
  @throughput_timeout 1_000

  @doc "The SRV name serving `n` records."
  def query(n), do: "_b#{n}._tcp.service.consul"

  @doc "dnsmasq's SRV records for every size: `s<i>.node.dc1.consul:4700`."
  def srv_records do
    for n <- @sizes, i <- 1..n, do: {query(n), "s#{i}.node.dc1.consul", 4700}
  end

  def run(%{quick: quick, ns: ns}) do
    Process.put(:bench_quick, quick)
    samples = if quick, do: 40, else: 400
    # Full: 3 rounds of 500 ms per implementation, the order rotating, so a
    # change in the machine's load hits all three alike.
    window = if quick, do: 200, else: 500
    in_flight = [1, 100, 1000]
    # --quick measures throughput at 3 records only.
    throughput_sizes = if quick, do: [3], else: @sizes

    for n <- @sizes do
      packet = PeerSide.encode_query(query(n))
      # Warm up each path (Caravan builds its resolver on first use) and
      # check that every path sees all n records.
      for _ <- 1..10 do
        ^n = PeerSide.lookup(:caravan, query(n), ns)
        ^n = PeerSide.lookup(:inet_res, query(n), ns)
        {:ok, _bytes} = PeerSide.floor_exchange(PeerSide.udp_socket(), ns, packet)
      end
    end

    latency_rows =
      for n <- @sizes do
        Log.say("row 2: SRV #{n} records, #{samples} sequential lookups per implementation")
        lat = latencies(n, ns, samples)

        p50 = fn impl -> Stats.percentile(lat[impl], 50) end
        p99 = fn impl -> Stats.percentile(lat[impl], 99) end

        p50_target =
          if n == 3,
            do: [{:vs_alt_at_least, 1.0}, {:vs_floor_at_most, 2.0}],
            else: {:vs_alt_at_least, 2.0}

        [
          %Row{
            group: 2,
            metric: "SRV p50 latency, #{n} records",
            caravan: p50.(:caravan),
            alt: p50.(:inet_res),
            floor: p50.(:floor),
            unit: "µs",
            better: :lower,
            target: p50_target
          },
          %Row{
            group: 2,
            metric: "SRV p99 latency, #{n} records",
            caravan: p99.(:caravan),
            alt: p99.(:inet_res),
            floor: p99.(:floor),
            unit: "µs",
            better: :lower
          }
        ]
      end
      |> List.flatten()

    throughput_rows =
      for n <- throughput_sizes, k <- in_flight do
        Log.say(
          "row 2: SRV #{n} records, #{k} in flight, #{window} ms x rounds per implementation"
        )

        results = rounds(@rounds, fn impl -> throughput(impl, n, k, ns, window) end)

        throughput_row(
          "SRV throughput, #{n} records, #{k} in flight",
          k,
          results,
          if(k > 1,
            do: [
              "one name in flight: Caravan's resolver (hickory) shares one query among identical questions in flight"
            ],
            else: []
          )
        )
      end

    latency_rows ++
      throughput_rows ++ distinct_rows(ns, window, if(quick, do: [1000], else: [100, 1000]))
  end

  # A throughput row from the rounds' results: the target applies at 1000
  # in flight; failed lookups (not counted in the rates) join the notes.
  defp throughput_row(metric, in_flight, results, notes) do
    errors =
      for {impl, %{errors: e}} <- results,
          e > 0,
          do: "#{impl} #{e} failed lookups (not counted)"

    %Row{
      group: 2,
      metric: metric,
      caravan: results.caravan.rate,
      alt: results.inet_res.rate,
      floor: results.floor.rate,
      unit: "lookups/s",
      better: :higher,
      target: if(in_flight == 1000, do: {:vs_alt_at_least, 3.0}),
      note: Enum.join(notes ++ errors, "; ")
    }
  end

  # hickory (Caravan's resolver) shares one query among identical questions
  # in flight, so with one name in flight the rows above count lookups
  # answered by a shared query. Here every lookup in flight asks its own
  # name, served by a second dnsmasq holding 1000 names of 3 records each,
  # so every lookup is a query that reaches the server.
  defp distinct_rows({ip, _port}, window, in_flight) do
    dns =
      Caravan.Test.Dnsmasq.start(
        listen: ip |> :inet.ntoa() |> to_string(),
        port: 8701,
        srv: distinct_records()
      )

    Caravan.Bench.OsProcs.record(dns.os_pid)
    ns = {ip, 8701}

    try do
      for w <- 1..1000, impl <- [:caravan, :inet_res] do
        3 = PeerSide.lookup(impl, distinct_name(3, w), ns)
      end

      for k <- in_flight do
        Log.say(
          "row 2: SRV 3 records, #{k} distinct names in flight, #{window} ms x rounds per implementation"
        )

        results =
          rounds(@rounds, fn impl -> throughput(impl, 3, k, ns, window, &distinct_name/2) end)

        throughput_row("SRV throughput, 3 records, #{k} distinct names in flight", k, results, [])
      end
    after
      Caravan.Test.Dnsmasq.stop(dns)
    end
  end

  # Sequential lookups, the three implementations interleaved so they share
  # the machine's noise. Microseconds per lookup.
  defp latencies(n, ns, samples) do
    query = query(n)
    packet = PeerSide.encode_query(query)
    socket = PeerSide.udp_socket()

    lat =
      for _ <- 1..samples, reduce: %{caravan: [], inet_res: [], floor: []} do
        acc ->
          {t1, ^n} = :timer.tc(fn -> PeerSide.lookup(:caravan, query, ns) end)
          {t2, ^n} = :timer.tc(fn -> PeerSide.lookup(:inet_res, query, ns) end)
          {t3, {:ok, _}} = :timer.tc(fn -> PeerSide.floor_exchange(socket, ns, packet) end)

          %{
            acc
            | caravan: [t1 | acc.caravan],
              inet_res: [t2 | acc.inet_res],
              floor: [t3 | acc.floor]
          }
      end

    :gen_udp.close(socket)
    lat
  end

  # Lookups completed per second with `k` processes each doing one lookup
  # after another for `window_ms`. Only lookups that complete within the
  # window with all `n` records count; failures are counted apart.
  defp throughput(impl, n, k, ns, window_ms, name \\ &same_name/2) do
    counters = :counters.new(2, [:write_concurrency])
    t0 = System.monotonic_time()
    deadline = t0 + System.convert_time_unit(window_ms, :millisecond, :native)

    workers =
      for w <- 1..k do
        query = name.(n, w)
        packet = if impl == :floor, do: PeerSide.encode_query(query)

        spawn_monitor(fn ->
          socket = if impl == :floor, do: PeerSide.udp_socket()
          worker(impl, query, n, ns, packet, socket, deadline, counters)
        end)
      end

    # Wait for the workers to finish their last lookup (bounded), so the
    # next measurement starts on a quiet server.
    limit = System.monotonic_time(:millisecond) + window_ms + @throughput_timeout + 500

    for {pid, ref} <- workers do
      wait = max(0, limit - System.monotonic_time(:millisecond))

      receive do
        {:DOWN, ^ref, :process, _, _} -> :ok
      after
        wait ->
          Process.exit(pid, :kill)

          receive do
            {:DOWN, ^ref, :process, _, _} -> :ok
          end
      end
    end

    Process.sleep(200)
    ok = :counters.get(counters, 1)
    %{rate: ok / (window_ms / 1000), ok: ok, errors: :counters.get(counters, 2)}
  end

  defp same_name(n, _worker), do: query(n)

  # Runs `measure.(impl)` for the three implementations in `count` rounds,
  # rotating the order; per implementation the round with the median rate,
  # errors summed over the rounds.
  defp rounds(count, measure) do
    impls = [:caravan, :inet_res, :floor]

    count = if Process.get(:bench_quick), do: 1, else: count

    runs =
      for r <- 0..(count - 1),
          impl <- Enum.drop(impls, r) ++ Enum.take(impls, r),
          do: {impl, measure.(impl)}

    for impl <- impls, into: %{} do
      mine = for {^impl, run} <- runs, do: run
      median = Stats.median(Enum.map(mine, & &1.rate))
      {impl, %{rate: median, errors: mine |> Enum.map(& &1.errors) |> Enum.sum()}}
    end
  end

  @distinct 1_000

  @doc "The SRV name `w` of the distinct-names set (3 records each)."
  def distinct_name(_n, w), do: "_d#{w}._tcp.service.consul"

  @doc "Records of the distinct-names server: #{@distinct} names of 3 records."
  def distinct_records do
    for w <- 1..@distinct, i <- 1..3, do: {distinct_name(3, w), "s#{i}.node.dc1.consul", 4700}
  end

  defp worker(impl, query, n, ns, packet, socket, deadline, counters) do
    if System.monotonic_time() < deadline do
      result =
        case impl do
          :floor ->
            case PeerSide.floor_exchange(socket, ns, packet) do
              {:ok, _} -> n
              error -> error
            end

          impl ->
            PeerSide.lookup(impl, query, ns, @throughput_timeout)
        end

      if System.monotonic_time() <= deadline do
        if result == n, do: :counters.add(counters, 1, 1), else: :counters.add(counters, 2, 1)
      end

      worker(impl, query, n, ns, packet, socket, deadline, counters)
    end
  end

  # -- The floor: raw exchanges of a pre-encoded query ---------------------
end
