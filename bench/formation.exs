defmodule Caravan.Bench.Formation do
  @moduledoc false
  # Cluster formation and join, four systems side by side on the same booted
  # nodes (127.0.2.i, distribution port 4370 each, +S 1:1, no epmd):
  #
  #   caravan    Caravan.Cluster.DnsStrategy: SRV _formN-rR._tcp.service.consul
  #              (a name per repetition R: every round starts as a boot does,
  #              with no memory of which queries needed TCP),
  #              nodes bench-4370@fI.node.dc1.consul (peers' hosts resolved by
  #              Caravan's epmd module through -caravan_nameservers)
  #   dns_poll   Caravan.Bench.DnsPollLike, what libcluster 3.5.0's DNSPoll
  #              does: A (+ AAAA) formN.bench.consul, nodes bench-4370@127.0.2.I
  #   floor_par  no DNS: every node is given all names, connects to all at once
  #   floor_seq  no DNS: the same list, one connect at a time
  #   floor_lower  no DNS: the same list, all at once, but only to the names
  #              that sort after one's own (nobody dials simultaneously)
  #
  # A round: every node gets its name for the system, a watcher and, at one
  # common OS time t0, its strategy; formation time = the last node's first
  # full view (N-1 peers) - t0. Systems interleaved, the order reversed every
  # other repetition; medians reported.
  alias Caravan.Bench.{Log, Peers, QueryLog, Stats}

  @port 4370
  @poll 1_000
  @systems [:caravan, :dns_poll, :floor_par, :floor_seq, :floor_lower]

  def systems, do: @systems
  def poll_interval, do: @poll
  def ip(i), do: {127, 0, 2, i}
  defp host(i), do: "f#{i}.node.dc1.consul"
  defp srv_query(n, rep), do: "_form#{n}-r#{rep}._tcp.service.consul"
  defp a_query(n), do: "form#{n}.bench.consul"

  defp name(:caravan, i), do: :"bench-#{@port}@#{host(i)}"
  defp name(_other, i), do: :"bench-#{@port}@127.0.2.#{i}"

  @doc "dnsmasq's records for clusters of the given sizes and `reps` repetitions: `[srv: ..., hosts: ...]`."
  def dns_records(sizes, reps) do
    max = Enum.max(sizes)

    [
      srv: for(n <- sizes, rep <- 1..reps, i <- 1..n, do: {srv_query(n, rep), host(i), @port}),
      hosts:
        for(i <- 1..max, do: {host(i), ip_text(i)}) ++
          for(n <- sizes, i <- 1..n, do: {a_query(n), ip_text(i)})
    ]
  end

  defp ip_text(i), do: ip(i) |> :inet.ntoa() |> to_string()

  defp strategy_opts(:caravan, n, _names, ctx),
    do: [
      query: srv_query(n, ctx.rep),
      node_sname: "bench",
      nameservers: [ctx.servers.caravan.nameserver],
      poll_interval: @poll
    ]

  defp strategy_opts(:dns_poll, n, _names, _ctx),
    do: [query: a_query(n), node_basename: "bench-#{@port}", poll_interval: @poll]

  defp strategy_opts(_floor, _n, names, _ctx), do: [nodes: names]

  @doc """
  One formation round of `system` on `members` (`[{node, index}]`), `n` of
  them. `rest_ms` > 0 also counts DNS queries at rest for that long
  (whole poll intervals), from half an interval after the first poll tick
  that is at least one interval after the mesh. Returns `%{ms, cpu_s,
  queries, lookup_ms, rest_qpp}`.
  """
  def formation(members, system, ctx, rest_ms) do
    n = length(members)
    names = for {_, i} <- members, do: name(system, i)
    Peers.each(members, fn {node, i} -> call(node, :distribute, [name(system, i)]) end)
    opts = strategy_opts(system, n, names, ctx)
    nodes = Enum.map(members, &elem(&1, 0))
    t0 = System.os_time(:microsecond) + 200_000 + 5_000 * n
    cpu0 = cpu(nodes)
    log = query_log(ctx, system)
    q0 = QueryLog.offset(log)
    Peers.each(nodes, &call(&1, :start_round, [system, n - 1, opts, t0, nil]))
    full = wait_for_mesh(nodes, deadline())
    cpu_s = (cpu(nodes) - cpu0) / 100
    queries = QueryLog.count(log, q0).total
    lookup_us = nodes |> Peers.each(&call(&1, :lookup_max, [])) |> Enum.max()
    {first_start_ms, first_lookup_ms} = first_lookups(nodes, system, t0)

    {rest_qpp, rest_types} =
      if rest_ms > 0 and system in [:caravan, :dns_poll] do
        sleep_until(rest_window_start(t0))
        q1 = QueryLog.offset(log)
        Process.sleep(rest_ms)
        %{total: total, by_type: types} = QueryLog.count(log, q1)
        {total / (n * rest_ms / @poll), types}
      else
        {nil, nil}
      end

    stop(nodes)

    %{
      ms: since(full, t0),
      cpu_s: cpu_s,
      queries: queries,
      lookup_ms: lookup_us / 1000,
      first_start_ms: first_start_ms,
      first_lookup_ms: first_lookup_ms,
      rest_qpp: rest_qpp,
      rest_types: rest_types
    }
  end

  @doc """
  One join round: `formed` (`[{node, index}]`) form a cluster with `system`
  from a list that already names the joiner; then `joiner` boots its
  distribution and starts `system` at t0. Returns the ms until every node
  sees all the others.
  """
  def join(formed, {joiner, j}, system, ctx) do
    all = formed ++ [{joiner, j}]
    n = length(all)
    names = for {_, i} <- all, do: name(system, i)
    # The joiner's epmd module (and its NIF) loaded once before, as on a
    # booted node: the join is timed from its distribution and strategy
    # starting.
    call(joiner, :distribute, [:"warmup-4399@127.0.2.#{j}"])
    call(joiner, :undistribute, [])
    Peers.each(formed, fn {node, i} -> call(node, :distribute, [name(system, i)]) end)
    opts = strategy_opts(system, n, names, ctx)
    formed_nodes = Enum.map(formed, &elem(&1, 0))
    t0 = System.os_time(:microsecond) + 200_000 + 5_000 * n
    Peers.each(formed_nodes, &call(&1, :start_round, [system, n - 2, opts, t0, nil]))

    ms =
      case wait_for_mesh(formed_nodes, deadline()) do
        :timeout ->
          :timeout

        _ ->
          Peers.each(formed_nodes, &call(&1, :retarget, [n - 1]))
          t1 = System.os_time(:microsecond) + 100_000
          call(joiner, :start_round, [system, n - 1, opts, t1, name(system, j)])
          since(wait_for_mesh(formed_nodes ++ [joiner], deadline()), t1)
      end

    stop(formed_nodes ++ [joiner])
    ms
  end

  # Each node's first discovery lookup of the round: when it started (ms
  # after t0) and how long it took (ms); the median node's, for the DNS
  # systems (nil for the floors).
  defp first_lookups(nodes, system, t0) when system in [:caravan, :dns_poll] do
    firsts = Peers.each(nodes, &call(&1, :first_lookup, []))
    started = for {at, _} <- firsts, at > 0, do: (at - t0) / 1000
    took = for {at, us} <- firsts, at > 0, do: us / 1000
    {Stats.median(started), Stats.median(took)}
  end

  defp first_lookups(_nodes, _system, _t0), do: {nil, nil}

  # The at-rest window (whole poll intervals long) starts half an interval
  # after a poll tick (every node's first poll is at t0, the next ones
  # every @poll after it), the first such point at least one interval
  # after the mesh. A window that started at the mesh could open in the
  # middle of a poll: the queries of that poll that the server logged
  # after the opening counted, and those of the poll one window later too,
  # so a node could count 4 polls in 3 (measured at 48 nodes: 1.18 to 1.28
  # queries per node per poll in runs where every node polled exactly once
  # per interval). And right after the mesh the machine is still busy with
  # the formation (64 nodes: `global` syncing, dnsmasq's log lines of TCP
  # queries written late): a window opened then read 0.82 at 64 nodes.
  defp rest_window_start(t0) do
    earliest = System.os_time(:microsecond) + @poll * 1000
    half = div(@poll * 1000, 2)
    k = max(0, ceil((earliest - t0 - half) / (@poll * 1000)))
    t0 + half + k * @poll * 1000
  end

  defp sleep_until(os_us),
    do: Process.sleep(max(0, div(os_us - System.os_time(:microsecond), 1000)))

  # ms from t0 (µs) to the last full view; :timeout when there was none.
  defp since(:timeout, _t0), do: :timeout
  defp since(full, t0), do: (Enum.max(full) - t0) / 1000

  # The floors ask no DNS; their rounds read Caravan's server's log (the
  # epmd module's host lookups would show there).
  defp query_log(ctx, :dns_poll), do: ctx.servers.dns_poll.log
  defp query_log(ctx, _system), do: ctx.servers.caravan.log

  defp call(node, f, a), do: Peers.call(node.peer, Caravan.Bench.PeerSide, f, a)
  defp cpu(nodes), do: nodes |> Enum.map(&Peers.cpu_ticks(&1.os_pid)) |> Enum.sum()
  # A round that forms no full mesh in this long is reported as a timeout.
  @deadline_ms 20_000
  def deadline_ms, do: @deadline_ms
  defp deadline, do: System.monotonic_time(:millisecond) + @deadline_ms

  # Asks only the nodes that have not yet reported, every 100 ms, so the
  # asking costs little while the nodes form.
  defp wait_for_mesh(nodes, deadline, seen \\ %{}) do
    seen =
      nodes
      |> Enum.reject(&Map.has_key?(seen, &1.peer))
      |> Peers.each(&{&1.peer, call(&1, :full_at, [])})
      |> Enum.reject(fn {_, t} -> t == nil end)
      |> Map.new()
      |> Map.merge(seen)

    cond do
      map_size(seen) == length(nodes) ->
        Map.values(seen)

      System.monotonic_time(:millisecond) > deadline ->
        views = Peers.each(nodes, &length(Peers.call(&1.peer, Node, :list, [])))
        Log.say("no full mesh within #{@deadline_ms} ms; peers seen: #{inspect(views)}")
        :timeout

      true ->
        Process.sleep(100)
        wait_for_mesh(nodes, deadline, seen)
    end
  end

  # Stops every strategy and drops every connection, until no node sees
  # another (global may reconnect a node while others are still stopping).
  defp stop(nodes, tries \\ 50) do
    Peers.each(nodes, &call(&1, :stop_round, []))

    cond do
      Enum.all?(Peers.each(nodes, &(Peers.call(&1.peer, Node, :list, []) == []))) -> :ok
      tries == 0 -> raise "nodes still connected after the round"
      true -> Process.sleep(100) && stop(nodes, tries - 1)
    end
  end

  @doc """
  What one node's first discovery lookup of an N-node cluster costs the DNS
  server, measured from the bench VM with the machine calm: lookups one
  after the other for `ms` milliseconds, each as a node's first (Caravan: its SRV query, with the
  memory of which queries go straight to TCP forgotten before each, so UDP
  then TCP when the answer outgrows UDP; DNSPoll-like: A then AAAA with
  `:inet_res`, no EDNS0, TCP when truncated). Returns `%{cpu_us: server
  CPU per lookup (µs; dnsmasq's user+system time and that of the children
  it forks for TCP connections), wall_us: per lookup (µs)}`, both nil
  (logged) when a lookup fails.
  """
  def server_cost(ctx, system, n, ms) do
    %{os_pid: os_pid, ip: ip, dns_port: port} = ctx.servers[system].dns
    lookup = first_lookup(system, n, {ip, port})
    ticks0 = Peers.cpu_ticks(os_pid, reaped_children: true)
    started = System.monotonic_time(:microsecond)
    k = repeat(lookup, started + ms * 1000, 0)
    us = System.monotonic_time(:microsecond) - started
    ticks = Peers.cpu_ticks(os_pid, reaped_children: true) - ticks0
    # cpu_ticks/2 reads 0 for a process that is gone: no figure then.
    if ticks < 0, do: raise("dnsmasq (OS pid #{os_pid}) exited during the measurement")
    %{cpu_us: ticks * 10_000 / k, wall_us: us / k}
  rescue
    # A lookup that fails on a calm machine is worth seeing, not worth the
    # run's other tables: the cells read "-".
    e -> not_measured(system, n, Exception.message(e))
  catch
    kind, reason -> not_measured(system, n, "#{kind}: #{inspect(reason)}")
  end

  defp not_measured(system, n, why) do
    Log.say("server cost of #{system} at N=#{n} not measured: #{why}")
    %{cpu_us: nil, wall_us: nil}
  end

  # Calls `fun` until the monotonic time `until` (µs); returns the count.
  defp repeat(fun, until, done) do
    if System.monotonic_time(:microsecond) >= until do
      done
    else
      _ = fun.()
      repeat(fun, until, done + 1)
    end
  end

  defp first_lookup(:caravan, n, nameserver) do
    query = srv_query(n, 1)

    fn ->
      _ = Caravan.Native.forget_transports()
      {:ok, [_ | _]} = Caravan.DnsClient.Native.get_nodes(query, nameservers: [nameserver])
    end
  end

  defp first_lookup(:dns_poll, n, nameserver) do
    query = String.to_charlist(a_query(n))

    fn ->
      [_ | _] = :inet_res.lookup(query, :in, :a, nameservers: [nameserver])
      :inet_res.lookup(query, :in, :aaaa, nameservers: [nameserver])
    end
  end

  @doc "Logs one round."
  def say(what, system, result), do: Log.say("#{what} #{system}: #{inspect(result)}")
end
