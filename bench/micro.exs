defmodule Caravan.Bench.PortScan do
  @moduledoc false
  # The port rule written the obvious way in Elixir, the baseline of the
  # dist_port/1 row: one pass over the node name's bytes up to "@", each
  # checked against [0-9A-Za-z_-], the value of the trailing run of digits
  # kept as it goes. The same answers as Caravan.Native.dist_port/1 for
  # valid names: {:ok, port} (4370 without trailing digits), or
  # {:error, kind}.

  def dist_port(node) when is_atom(node), do: node |> Atom.to_string() |> dist_port()
  def dist_port(node) when is_list(node), do: node |> List.to_string() |> dist_port()
  def dist_port(node) when is_binary(node), do: scan(node, 0, nil)

  # len: bytes of the name part so far; port: the trailing digits' value
  # so far, nil after a non-digit.
  defp scan(<<>>, len, port), do: finish(len, port)
  defp scan(<<?@, _host::binary>>, len, port), do: finish(len, port)

  defp scan(<<c, rest::binary>>, len, port) when c in ?0..?9,
    do: scan(rest, len + 1, (port || 0) * 10 + c - ?0)

  defp scan(<<c, rest::binary>>, len, _port)
       when c in ?a..?z or c in ?A..?Z or c == ?_ or c == ?-,
       do: scan(rest, len + 1, nil)

  defp scan(_other, _len, _port), do: {:error, :invalid_name}

  defp finish(0, _port), do: {:error, :empty_name}
  defp finish(_len, nil), do: {:ok, 4370}
  defp finish(_len, port) when port in 1..65_535, do: {:ok, port}
  defp finish(_len, _port), do: {:error, :port_out_of_range}
end

defmodule Caravan.Bench.Micro do
  @moduledoc false
  # The micro rows, each Caravan against the alternative and a floor in
  # the same run, interleaved so they share the machine's noise:
  #
  #   SRV lookup   p50/p99 µs for 3, 50 and 300 records from dnsmasq on
  #                127.0.1.3:8700, every target with a --host-record (so
  #                dnsmasq fills the additional section). Caravan:
  #                DnsClient.Native.get_nodes/2 as the strategy calls it;
  #                NIF: Caravan.Native.srv_lookup/5 and its reply message
  #                alone; :inet_res.resolve/4 with the same nameserver
  #                (EDNS0 1232 bytes for the answers that outgrow 512);
  #                floor: a prebuilt query on an open :gen_udp socket, or
  #                for answers that need TCP, a new :gen_tcp connection per
  #                query. Every answer is checked for all n records.
  #   in flight    1,000 processes, each asking one of 10 SRV names (3
  #                records, dnsmasq on 127.0.1.4:8700) one lookup after the
  #                other: lookups/s over a window after a warm-up.
  #   dist_port/1  ns per call in one process: Caravan.Native.dist_port/1
  #                against Caravan.Bench.PortScan and an empty NIF.
  #   connect      Node.connect/1 from a node to a node it never saw,
  #                µs until connected: Caravan's epmd module (port from
  #                the name) against OTP's epmd client and a real epmd the
  #                bench runs on port 4469; nodes on 127.0.4.x / 127.0.5.x.
  alias Caravan.Bench.{Log, OsProcs, Peers, PortScan, Stats}
  alias Caravan.Test.Dnsmasq

  @sizes [3, 50, 300]
  @in_flight 1_000
  # The names the in-flight workers ask, each by 1/@flight_names of them.
  # dnsmasq looks a name up by walking a list of every --srv-host, so with
  # a name per worker (3,000 entries) the server, not a client, set the
  # rate (bench/README.md, "Lookups in flight").
  @flight_names 10
  @impls [:caravan, :nif, :inet_res, :floor]
  @epmd_port 4469

  defp query(n), do: "_m#{n}._tcp.service.consul"
  defp flight_name(k), do: "_f#{k}._tcp.service.consul"
  defp flight_query(w), do: flight_name(rem(w, @flight_names))
  defp target(i), do: "m#{i}.node.dc1.consul"

  defp hosts(count),
    do: for(i <- 1..count, do: {target(i), "10.9.#{div(i, 256)}.#{rem(i, 256)}"})

  @doc """
  Runs the micro rows (`parts`: any of :srv, :in_flight, :dist_port,
  :connect; default all). Returns `%{part => rows, notes: [text],
  figures: %{key => number}}`: rows as lists of cells, the first one the
  header; figures for the run's checks, `{:srv, records, percentile,
  impl}` in µs and `{:in_flight, impl}` in lookups/s.
  """
  def run(quick, parts \\ [:srv, :in_flight, :dist_port, :connect]) do
    out = :ets.new(:bench_micro_out, [:public, :duplicate_bag])

    rows = %{
      srv: fn -> srv_rows(quick, out) end,
      in_flight: fn -> in_flight_rows(quick, out) end,
      dist_port: fn -> dist_port_rows(quick) end,
      connect: fn -> connect_rows(quick) end
    }

    result = for part <- parts, into: %{}, do: {part, rows[part].()}

    Map.merge(result, %{
      notes: for({:note, text} <- :ets.tab2list(out), do: text),
      figures: for({:figure, key, value} <- :ets.tab2list(out), into: %{}, do: {key, value})
    })
  end

  @doc """
  The lookup path's targets checked on `figures` (from `run/2`), p50s of
  Caravan's `get_nodes/2`: one line each, "met" or "NOT met". A part
  that was not run reads "NOT met".
  """
  def check_lines(figures) do
    srv50 = fn n, impl -> figures[{:srv, n, 50, impl}] end
    le = fn a, b -> is_number(a) and is_number(b) and a <= b end
    scale = fn x, k -> if is_number(x), do: k * x end

    [
      {"SRV 3 records p50: Caravan at most 1.5x the floor and 0.75x :inet_res",
       le.(srv50.(3, :caravan), scale.(srv50.(3, :floor), 1.5)) and
         le.(srv50.(3, :caravan), scale.(srv50.(3, :inet_res), 0.75))},
      {"SRV 50 records p50: Caravan at most 0.75x :inet_res",
       le.(srv50.(50, :caravan), scale.(srv50.(50, :inet_res), 0.75))},
      {"SRV 300 records (full additional section) p50: Caravan at most 1.0x :inet_res",
       le.(srv50.(300, :caravan), srv50.(300, :inet_res))},
      {"1,000 lookups in flight: Caravan at least 2x :inet_res's lookups/s",
       le.(scale.(figures[{:in_flight, :inet_res}], 2), figures[{:in_flight, :caravan}])}
    ]
    |> Enum.map(fn {text, ok} -> "#{if ok, do: "met    ", else: "NOT met"}  #{text}" end)
  end

  # -- SRV lookup latency ---------------------------------------------------

  defp srv_rows(quick, out) do
    dns =
      start_dns("127.0.1.3",
        srv: for(n <- @sizes, i <- 1..n, do: {query(n), target(i), 4370}),
        hosts: hosts(Enum.max(@sizes))
      )

    # Configured as on a node booted with -caravan_nameservers, so
    # get_nodes/2 also writes the epmd module's address cache.
    System.put_env("CARAVAN_NAMESERVERS", Dnsmasq.nameserver(dns))
    :ok = Caravan.Epmd.HostResolver.configure()
    # Read once; the nodes the bench starts later inherit no stale server.
    System.delete_env("CARAVAN_NAMESERVERS")

    try do
      for n <- @sizes do
        samples = samples(quick, n)
        Log.say("micro: SRV #{n} records, #{samples} lookups per implementation")
        lookups = Map.new(@impls, &{&1, lookup_fun(&1, query(n), n, dns, 2_000)})
        # Warm-up: Caravan learns which queries go straight to TCP.
        for _ <- 1..20, {_, f} <- lookups, do: f.()
        times = latencies(lookups, samples)

        for {impl, {_, errors}} <- times, errors != [] do
          :ets.insert(
            out,
            {:note,
             "SRV #{n} records, #{impl}: #{length(errors)} failed, " <>
               "e.g. #{inspect(hd(errors))}"}
          )
        end

        transport = if n > 3, do: " (TCP)", else: " (UDP)"

        for p <- [50, 99] do
          [c, nif, inet, floor] =
            for impl <- @impls do
              us = times[impl] |> elem(0) |> Stats.percentile(p)
              :ets.insert(out, {:figure, {:srv, n, p, impl}, us})
              us
            end

          ["#{n} records#{transport}, p#{p}" | Enum.map([c, nif, inet, floor], &Stats.fmt/1)] ++
            [
              Stats.ratio(c, inet),
              Stats.ratio(c, floor),
              Stats.ratio(nif, floor),
              Stats.ratio(inet, floor)
            ]
        end
      end
      |> Enum.concat()
      |> then(
        &[
          [
            "SRV lookup, µs"
            | ~w(Caravan NIF :inet_res floor Caravan/:inet_res Caravan/floor NIF/floor :inet_res/floor)
          ]
          | &1
        ]
      )
    after
      Dnsmasq.stop(dns)
    end
  end

  defp samples(true, n), do: %{3 => 300, 50 => 150, 300 => 40}[n]
  defp samples(false, n), do: %{3 => 1_000, 50 => 500, 300 => 200}[n]

  # `samples` rounds, each running every lookup once in a rotating order.
  # Returns %{impl => {[µs of each good lookup], [failures]}}.
  defp latencies(lookups, samples) do
    order = Enum.map(lookups, &elem(&1, 0))

    acc =
      for i <- 1..samples, impl <- rotate(order, i), reduce: %{} do
        acc ->
          {us, result} = :timer.tc(lookups[impl])

          Map.update(acc, impl, add(result, us, {[], []}), &add(result, us, &1))
      end

    Map.new(acc, fn {impl, {ok, errors}} -> {impl, {ok, Enum.reverse(errors)}} end)
  end

  defp add(:ok, us, {ok, errors}), do: {[us | ok], errors}
  defp add(error, _us, {ok, errors}), do: {ok, [error | errors]}

  defp rotate(list, i),
    do: Enum.drop(list, rem(i, length(list))) ++ Enum.take(list, rem(i, length(list)))

  # A zero-arity function doing one lookup of `query` by `impl` that
  # returns :ok when the answer has all `n` records, else {:error, what}.
  # The floor's socket (UDP) is opened here, once; the floor also checks
  # that the reply's additional section has a record per target.
  defp lookup_fun(:caravan, query, n, dns, timeout) do
    opts = [nameservers: [Dnsmasq.nameserver(dns)], timeout: timeout]

    fn ->
      case Caravan.DnsClient.Native.get_nodes(query, opts) do
        {:ok, peers} when length(peers) == n -> :ok
        other -> {:error, other}
      end
    end
  end

  defp lookup_fun(:nif, query, n, dns, timeout) do
    servers = [{dns.ip, dns.dns_port}]

    fn ->
      {:ok, ref} = Caravan.Native.srv_lookup(query, servers, timeout, :auto, false)

      receive do
        {:caravan_srv, ^ref, {:ok, records}} when length(records) == n -> :ok
        {:caravan_srv, ^ref, other} -> {:error, other}
      after
        timeout + 1_000 -> {:error, :no_reply}
      end
    end
  end

  defp lookup_fun(:inet_res, query, n, dns, timeout) do
    name = String.to_charlist(query)
    edns = if n > 3, do: [edns: 0, udp_payload_size: 1232], else: []
    opts = [nameservers: [{dns.ip, dns.dns_port}], timeout: timeout] ++ edns

    fn ->
      with {:ok, msg} <- :inet_res.resolve(name, :in, :srv, opts),
           ^n <- msg |> :inet_dns.msg(:anlist) |> Enum.count(&(:inet_dns.rr(&1, :type) == :srv)) do
        :ok
      else
        other -> {:error, other}
      end
    end
  end

  defp lookup_fun(:floor, query, n, dns, timeout) do
    packet = encode_query(query)
    server = {dns.ip, dns.dns_port}

    if n > 3,
      do: fn -> tcp_exchange(server, packet, n, timeout) end,
      else: udp_floor(server, packet, n, timeout)
  end

  defp udp_floor({ip, port}, packet, n, timeout) do
    {:ok, socket} = :gen_udp.open(0, [:binary, active: false, ip: {127, 0, 0, 1}])
    <<_id::16, body::binary>> = packet
    sent = :counters.new(1, [])

    fn ->
      :ok = :counters.add(sent, 1, 1)
      id = rem(:counters.get(sent, 1), 65_536)
      :ok = :gen_udp.send(socket, ip, port, <<id::16, body::binary>>)

      case udp_reply(socket, id, timeout) do
        {:ok, <<_::32, ^n::16, _ns::16, ar::16, _::binary>>} when ar >= n -> :ok
        other -> {:error, other}
      end
    end
  end

  # The reply to `id` after its id, skipping a late reply to an earlier
  # query (one that timed out).
  defp udp_reply(socket, id, timeout) do
    case :gen_udp.recv(socket, 0, timeout) do
      {:ok, {_, _, <<^id::16, rest::binary>>}} -> {:ok, rest}
      {:ok, _earlier} -> udp_reply(socket, id, timeout)
      error -> error
    end
  end

  defp tcp_exchange({ip, port}, packet, n, timeout) do
    <<id::16, _::binary>> = packet

    with {:ok, socket} <- :gen_tcp.connect(ip, port, [:binary, packet: 2, active: false], timeout) do
      reply = with :ok <- :gen_tcp.send(socket, packet), do: :gen_tcp.recv(socket, 0, timeout)

      :gen_tcp.close(socket)

      case reply do
        {:ok, <<^id::16, _::32, ^n::16, _ns::16, ar::16, _::binary>>} when ar >= n -> :ok
        other -> {:error, other}
      end
    end
  end

  # The wire form of an SRV query for `name` with an EDNS0 OPT record
  # advertising 1232 bytes (RFC 6891), as Caravan sends it: header and
  # question encoded by OTP's :inet_dns, the 11-byte OPT record appended
  # (OTP has no public constructor for it), checked by decoding it again.
  defp encode_query(name) do
    header = :inet_dns.make_header(id: 0x4242, rd: true, opcode: :query)
    question = :inet_dns.make_dns_query(domain: String.to_charlist(name), type: :srv, class: :in)
    msg = :inet_dns.make_msg(header: header, qdlist: [question])
    <<head::binary-size(10), 0::16, rest::binary>> = :inet_dns.encode(msg)
    # OPT: root name, TYPE 41, CLASS = UDP payload size, TTL 0, RDLENGTH 0.
    packet = <<head::binary, 1::16, rest::binary, 0, 41::16, 1232::16, 0::32, 0::16>>
    {:ok, decoded} = :inet_dns.decode(packet)
    [opt] = :inet_dns.msg(decoded, :arlist)
    1232 = :inet_dns.rr(opt, :udp_payload_size)
    packet
  end

  # -- lookups in flight ----------------------------------------------------

  defp in_flight_rows(quick, out) do
    dns =
      start_dns("127.0.1.4",
        srv: for(k <- 0..(@flight_names - 1), i <- 1..3, do: {flight_name(k), target(i), 4370}),
        hosts: hosts(3)
      )

    # Lookups completed in the first `warm` ms are not counted: every
    # worker's first lookup starts at once.
    {rounds, warm, window} = if quick, do: {1, 200, 500}, else: {3, 500, 2_000}
    impls = [:caravan, :inet_res]

    Log.say(
      "micro: #{@in_flight} lookups in flight, #{rounds} x #{warm} + #{window} ms per implementation"
    )

    workers = Map.new(impls, &{&1, start_workers(&1, dns)})

    try do
      runs =
        for r <- 1..rounds,
            impl <- rotate(impls, r),
            do: {impl, throughput(workers[impl], warm, window, {out, impl})}

      [c, i] =
        for impl <- impls do
          mine = for {^impl, run} <- runs, do: run
          errors = mine |> Enum.map(& &1.errors) |> Enum.sum()

          if errors > 0 do
            [{_, example}] = :ets.lookup(out, {:failed, impl})
            text = "in flight, #{impl}: #{errors} failed lookups (not counted), e.g. "
            :ets.insert(out, {:note, text <> inspect(example)})
          end

          rate = mine |> Enum.map(& &1.rate) |> Stats.median()
          :ets.insert(out, {:figure, {:in_flight, impl}, rate})
          rate
        end

      [
        ~w(lookups/s Caravan :inet_res Caravan/:inet_res),
        ["#{@in_flight} in flight, 3 records", Stats.fmt(c), Stats.fmt(i), Stats.ratio(c, i)]
      ]
    after
      for {_, pids} <- workers, pid <- pids, do: Process.exit(pid, :kill)
      Dnsmasq.stop(dns)
    end
  end

  # @in_flight processes for `impl`, each ready to look up one of the names
  # when told to.
  defp start_workers(impl, dns) do
    parent = self()

    for w <- 1..@in_flight do
      spawn(fn ->
        lookup = lookup_fun(impl, flight_query(w), 3, dns, 1_000)
        worker(lookup, parent)
      end)
    end
  end

  defp worker(lookup, parent) do
    receive do
      {:go, from, until, counters, failed} ->
        work(lookup, from, until, counters, failed)
        send(parent, {:done, self()})
    end

    worker(lookup, parent)
  end

  # One lookup after the other until `until`; those that end between
  # `from` and `until` (monotonic µs) are counted, good ones in counter 1,
  # the first failure kept in `table` under {:failed, impl}.
  defp work(lookup, from, until, counters, {table, impl} = failed) do
    result = lookup.()
    now = System.monotonic_time(:microsecond)

    cond do
      now < from or now > until ->
        :ok

      result == :ok ->
        :counters.add(counters, 1, 1)

      true ->
        :counters.add(counters, 2, 1)
        :ets.insert_new(table, {{:failed, impl}, result})
    end

    if now < until, do: work(lookup, from, until, counters, failed)
  end

  # Every worker looking up without pause: lookups per second that
  # returned all 3 records within the `window_ms` after `warm_ms` (1 s
  # bound per lookup). Returns %{rate, errors}.
  defp throughput(workers, warm_ms, window_ms, failed) do
    counters = :counters.new(2, [:write_concurrency])
    from = System.monotonic_time(:microsecond) + warm_ms * 1000
    until = from + window_ms * 1000
    Enum.each(workers, &send(&1, {:go, from, until, counters, failed}))

    for pid <- workers do
      receive do
        {:done, ^pid} -> :ok
      end
    end

    # A quiet server before the next measurement.
    Process.sleep(100)
    %{rate: :counters.get(counters, 1) / (window_ms / 1000), errors: :counters.get(counters, 2)}
  end

  defp start_dns(ip, records) do
    dns = Dnsmasq.start([listen: ip, port: 8700] ++ records)
    OsProcs.record(dns.os_pid)
    dns
  end

  # -- the port rule ----------------------------------------------------------

  @node :"app-4370@web1.node.dc1.consul"
  @chunk 1_000

  defp dist_port_rows(quick) do
    names = [@node, :"app-name3434@example.net", :"app-name-4834@example.net", :app@host]

    for name <- names do
      ours = Caravan.Native.dist_port(name)
      theirs = PortScan.dist_port(name)
      ours == theirs || raise "port rules disagree on #{name}: #{inspect({ours, theirs})}"
    end

    rounds = if quick, do: 3, else: 7
    window = if quick, do: 100, else: 300
    # The empty NIF exists in test builds only (the bench's).
    floor? = Code.ensure_loaded?(Caravan.Native) and function_exported?(Caravan.Native, :floor, 0)
    impls = [:caravan, :elixir] ++ if(floor?, do: [:floor], else: [])
    Log.say("micro: dist_port/1, #{rounds} rounds of #{window} ms per implementation")

    ns =
      for r <- 1..rounds, impl <- rotate(impls, r), reduce: %{} do
        acc ->
          Map.update(acc, impl, [ns_per_call(impl, window)], &[ns_per_call(impl, window) | &1])
      end
      |> Map.new(fn {impl, values} -> {impl, Stats.median(values)} end)

    [
      [
        "ns per call",
        "Caravan.Native.dist_port/1",
        "Elixir byte scan",
        "empty NIF",
        "Caravan/Elixir"
      ],
      [
        "dist_port/1, 1 process",
        Stats.fmt(ns.caravan),
        Stats.fmt(ns.elixir),
        Stats.fmt(ns[:floor]),
        Stats.ratio(ns.caravan, ns.elixir)
      ]
    ]
  end

  defp ns_per_call(impl, window_ms) do
    t0 = System.monotonic_time(:nanosecond)
    calls = calls(impl, t0 + window_ms * 1_000_000, 0)
    (System.monotonic_time(:nanosecond) - t0) / calls
  end

  defp calls(impl, deadline, done) do
    chunk(impl, @chunk)
    done = done + @chunk
    if System.monotonic_time(:nanosecond) < deadline, do: calls(impl, deadline, done), else: done
  end

  defp chunk(_impl, 0), do: :ok

  defp chunk(:caravan, k) do
    {:ok, 4370} = Caravan.Native.dist_port(@node)
    chunk(:caravan, k - 1)
  end

  defp chunk(:elixir, k) do
    {:ok, 4370} = PortScan.dist_port(@node)
    chunk(:elixir, k - 1)
  end

  defp chunk(:floor, k) do
    _ = apply(Caravan.Native, :floor, [])
    chunk(:floor, k - 1)
  end

  # -- first connect ----------------------------------------------------------

  defp connect_rows(quick) do
    rounds = if quick, do: 6, else: 15
    ips = %{caravan: for(i <- 1..3, do: {127, 0, 4, i}), epmd: for(i <- 1..3, do: {127, 0, 5, i})}
    epmd = OsProcs.start_epmd(@epmd_port, ips.epmd)
    started = :ets.new(:bench_connect_nodes, [:public, :duplicate_bag])

    try do
      Log.say("micro: booting 6 nodes for the first-connect row")

      nodes =
        for {kind, opts} <- [caravan: [], epmd: [epmd_port: @epmd_port]], into: %{} do
          booted = Peers.start_many(ips[kind], opts)
          for node <- booted, do: :ets.insert(started, {:node, node})
          [client | targets] = booted

          Peers.call(client.peer, Caravan.Bench.PeerSide, :distribute, [
            client_name(kind, client.ip)
          ])

          {kind, {client, targets}}
        end

      Log.say("micro: first connects, #{rounds} rounds of 2 per kind")

      # Round 0 warms each client up; every round renames the targets, so
      # each connect goes to a node name the client never saw.
      samples =
        for r <- 0..rounds,
            kind <- rotate([:caravan, :epmd], r),
            reduce: %{caravan: [], epmd: []} do
          acc ->
            {client, targets} = nodes[kind]

            times =
              for target <- targets do
                name = target_name(kind, r, target.ip)
                Peers.call(target.peer, Caravan.Bench.PeerSide, :distribute, [name])
                {us, true} = Peers.call(client.peer, :timer, :tc, [Node, :connect, [name]])
                true = Peers.call(client.peer, :erlang, :disconnect_node, [name])
                us
              end

            if r == 0, do: acc, else: Map.update!(acc, kind, &(times ++ &1))
        end

      Log.say("micro: first connects, µs: #{inspect(samples)}")
      [c, e] = for kind <- [:caravan, :epmd], do: Stats.median(samples[kind])

      [
        ["first connect, µs", "Caravan's epmd module", "OTP's epmd", "Caravan/epmd"],
        [
          "Node.connect/1 to a new node, median of #{length(samples.caravan)}",
          Stats.fmt(c),
          Stats.fmt(e),
          Stats.ratio(c, e)
        ]
      ]
    after
      for {:node, node} <- :ets.tab2list(started), do: Peers.stop(node)
      OsProcs.stop_epmd(epmd)
    end
  end

  defp client_name(:caravan, ip), do: :"mc-4370@#{:inet.ntoa(ip)}"
  defp client_name(:epmd, ip), do: :"me@#{:inet.ntoa(ip)}"
  # One epmd serves every host here, and it keys nodes by the name part:
  # each target's name part is its own.
  defp target_name(:caravan, r, {_, _, _, i} = ip), do: :"mt#{r}x#{i}-4370@#{:inet.ntoa(ip)}"
  defp target_name(:epmd, r, {_, _, _, i} = ip), do: :"et#{r}x#{i}@#{:inet.ntoa(ip)}"
end
