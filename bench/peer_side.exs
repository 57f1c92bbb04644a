# Code that runs on the bench's nodes (separate OS processes). The bench VM
# compiles this file once and loads the bytecode into every node it starts
# (Caravan.Bench.Peers), so the nodes need nothing but Caravan on their
# code path.

defmodule Caravan.Bench.PeerSide do
  @moduledoc false

  @doc """
  Loads every module of `apps` now, as a release booted in embedded mode
  does, so that a first connection does not also pay for loading code
  from disk. Returns the number of modules loaded.
  """
  def preload(apps \\ [:kernel, :stdlib, :elixir, :logger, :caravan]) do
    mods =
      for app <- apps,
          {:ok, mods} = :application.get_key(app, :modules) |> ok_or_empty(app),
          mod <- mods,
          do: mod

    :ok = :code.ensure_modules_loaded(mods) |> ok_or_partial()
    length(mods)
  end

  defp ok_or_empty(:undefined, app) do
    :ok = Application.load(app)
    :application.get_key(app, :modules)
  end

  defp ok_or_empty(found, _app), do: found

  # A few modules of an app may not load outside their context (e.g. need
  # an optional dependency); the rest are loaded either way.
  defp ok_or_partial(:ok), do: :ok
  defp ok_or_partial({:error, _failed}), do: :ok

  # -- /proc: threads and RSS of this OS process ---------------------------

  @doc "`%{threads: n, thread_names: %{name => count}, rss_kb: kb}` of this VM."
  def proc_status do
    pid = List.to_string(:os.getpid())
    tasks = File.ls!("/proc/#{pid}/task")

    names =
      for t <- tasks,
          name = read_comm(pid, t),
          name != nil,
          do: name

    %{threads: length(tasks), thread_names: Enum.frequencies(names), rss_kb: rss_kb(pid)}
  end

  defp read_comm(pid, task) do
    case File.read("/proc/#{pid}/task/#{task}/comm") do
      {:ok, text} -> String.trim(text)
      _ -> nil
    end
  end

  defp rss_kb(pid) do
    "/proc/#{pid}/status"
    |> File.read!()
    |> String.split("\n")
    |> Enum.find_value(fn
      "VmRSS:" <> rest -> rest |> String.trim() |> String.split() |> hd() |> String.to_integer()
      _ -> nil
    end)
  end

  # -- Lookups, bounded in flight ------------------------------------------

  @doc """
  Runs `total` SRV lookups of `query` against `ns` ({ip, port}) with
  `in_flight` worker processes, in 10 phases, sampling RSS after each.
  `impl` is `:caravan` (Caravan.DNS.lookup_srv/2), `:inet_res`
  (`:inet_res.resolve/4` with EDNS0, 1232 bytes) or `:floor` (raw UDP
  exchanges, see `floor_exchange/3`). Every answer must hold
  `expect` records. A warm-up of two tenths runs first, unsampled. Returns
  `%{ok, errors, rss_kb: [10 samples], ms}` (counts without the warm-up).
  """
  def lookups(impl, total, in_flight, query, ns, expect) do
    per_phase = div(total, 10)
    t0 = System.monotonic_time(:millisecond)
    # Two more tenths first, not sampled: allocators and caches warm up.
    _ = lookup_phase(impl, 2 * per_phase, in_flight, query, ns, expect)

    {ok, errors, samples} =
      Enum.reduce(1..10, {0, 0, []}, fn _phase, {ok, errors, samples} ->
        {o, e} = lookup_phase(impl, per_phase, in_flight, query, ns, expect)
        {ok + o, errors + e, [proc_status().rss_kb | samples]}
      end)

    %{
      ok: ok,
      errors: errors,
      rss_kb: Enum.reverse(samples),
      ms: System.monotonic_time(:millisecond) - t0
    }
  end

  defp lookup_phase(impl, count, in_flight, query, ns, expect) do
    counters = :counters.new(2, [:atomics])
    workers = min(in_flight, count)
    base = div(count, workers)
    extra = rem(count, workers)

    run_workers(workers, {impl, :lookup}, fn w ->
      n = base + if(w <= extra, do: 1, else: 0)
      lookup_loop(impl, n, query, ns, expect, counters)
    end)

    {:counters.get(counters, 1), :counters.get(counters, 2)}
  end

  defp lookup_loop(_impl, 0, _query, _ns, _expect, _counters), do: :ok

  # The floor: raw UDP exchanges of a pre-encoded query on one socket.
  defp lookup_loop(:floor, n, query, ns, expect, counters),
    do: lookup_loop({:floor, udp_socket(), encode_query(query)}, n, query, ns, expect, counters)

  defp lookup_loop({:floor, socket, packet} = floor, n, query, ns, expect, counters) do
    case floor_exchange(socket, ns, packet) do
      {:ok, _} -> :counters.add(counters, 1, 1)
      _ -> :counters.add(counters, 2, 1)
    end

    lookup_loop(floor, n - 1, query, ns, expect, counters)
  end

  defp lookup_loop(impl, n, query, ns, expect, counters) do
    if lookup(impl, query, ns) == expect,
      do: :counters.add(counters, 1, 1),
      else: :counters.add(counters, 2, 1)

    lookup_loop(impl, n - 1, query, ns, expect, counters)
  end

  @doc """
  One SRV lookup bounded by `timeout` ms; returns the number of SRV records
  in the answer, or `{:error, reason}`. `:inet_res` gets one try of
  `timeout` ms (`retry: 1`); Caravan's bound covers its retries and TCP.
  """
  def lookup(impl, query, ns, timeout \\ 5_000)

  def lookup(:caravan, query, {ip, port}, timeout) do
    case Caravan.DNS.lookup_srv(query, nameservers: [{ip, port}], timeout: timeout) do
      {:ok, records} -> length(records)
      {:error, reason} -> {:error, reason}
    end
  end

  def lookup(:inet_res, query, ns, timeout) do
    opts = [nameservers: [ns], edns: 0, udp_payload_size: 1232, timeout: timeout, retry: 1]

    case :inet_res.resolve(String.to_charlist(query), :in, :srv, opts) do
      {:ok, msg} ->
        msg |> :inet_dns.msg(:anlist) |> Enum.count(&(:inet_dns.rr(&1, :type) == :srv))

      {:error, reason} ->
        {:error, reason}
    end
  end

  # -- The floor of a lookup: a raw UDP exchange -----------------------------

  @doc "A UDP socket for `floor_exchange/3`."
  def udp_socket do
    {:ok, socket} = :gen_udp.open(0, [:binary, active: false, ip: {127, 0, 0, 1}])
    socket
  end

  @doc """
  The floor: sends the pre-encoded query on an open UDP socket and waits
  for the reply bytes, no decoding. For 50 and 500 records the reply is
  dnsmasq's truncated answer (TC bit set): the floor is one UDP round trip
  to the same server, whatever a full answer needs on top.
  Returns `{:ok, reply_bytes}` or `{:error, reason}`.
  """
  def floor_exchange(socket, {ip, port}, packet) do
    :ok = :gen_udp.send(socket, ip, port, packet)
    <<id::16, _::binary>> = packet

    case :gen_udp.recv(socket, 0, 5_000) do
      {:ok, {_ip, _port, <<^id::16, _::binary>> = reply}} -> {:ok, reply}
      {:ok, _other} -> {:error, :unexpected_reply}
      error -> error
    end
  end

  @doc """
  The wire form of an SRV query for `name` with an EDNS0 OPT record
  advertising 1232 bytes (RFC 6891), as Caravan and the `:inet_res` side
  send it. The header and question are encoded by OTP's `:inet_dns`; OTP
  has no public constructor for the OPT record, so its 11 bytes are
  appended here and the result is checked by decoding it with `:inet_dns`.
  """
  def encode_query(name) do
    header = :inet_dns.make_header(id: 0x4242, rd: true, opcode: :query)
    question = :inet_dns.make_dns_query(domain: String.to_charlist(name), type: :srv, class: :in)
    msg = :inet_dns.make_msg(header: header, qdlist: [question])
    <<head::binary-size(10), 0::16, rest::binary>> = :inet_dns.encode(msg)
    # OPT: root name, TYPE 41, CLASS = UDP payload size, TTL 0 (extended
    # RCODE, version 0, flags), RDLENGTH 0.
    packet = <<head::binary, 1::16, rest::binary, 0, 41::16, 1232::16, 0::32, 0::16>>

    {:ok, decoded} = :inet_dns.decode(packet)
    [opt] = :inet_dns.msg(decoded, :arlist)
    1232 = :inet_dns.rr(opt, :udp_payload_size)
    packet
  end

  # -- dist_port/1 calls on every scheduler ---------------------------------

  # Runs fun.(w) for w in 1..count, each in its own monitored process whose
  # :bench_role is `role` (how long_schedule events are attributed), and
  # waits for all; a worker that dies raises.
  defp run_workers(count, role, fun) do
    refs =
      for w <- 1..count do
        {_pid, ref} =
          spawn_monitor(fn ->
            Process.put(:bench_role, role)
            fun.(w)
          end)

        ref
      end

    for ref <- refs do
      receive do
        {:DOWN, ^ref, :process, _, :normal} ->
          :ok

        {:DOWN, ^ref, :process, _, reason} ->
          raise "#{inspect(role)} worker died: #{inspect(reason)}"
      end
    end

    :ok
  end

  @doc """
  Calls `Caravan.Epmd.dist_port/1` (`impl` `:caravan`) or
  `Caravan.Native.floor/0` (`:floor`, the control) `total` times, spread
  over one process per online scheduler. Returns the elapsed ms.
  """
  def dist_port_calls(total, impl \\ :caravan) do
    s = System.schedulers_online()
    t0 = System.monotonic_time(:millisecond)

    run_workers(s, {impl, :dist_port}, fn _w -> dist_port_loop(impl, div(total, s)) end)

    System.monotonic_time(:millisecond) - t0
  end

  defp dist_port_loop(_impl, 0), do: :ok

  defp dist_port_loop(:caravan, n) do
    4370 = Caravan.Epmd.dist_port(:"app-4370@web1.node.dc1.consul")
    dist_port_loop(:caravan, n - 1)
  end

  # The control: the same loop around the NIF that does nothing.
  defp dist_port_loop(:floor, n) do
    :ok = Caravan.Native.floor()
    dist_port_loop(:floor, n - 1)
  end

  # -- long_schedule events --------------------------------------------------

  @doc """
  Runs `fun` with `:erlang.system_monitor/2` watching for `long_schedule`
  (a process or port running for more than `ms` ms without being scheduled
  out). Returns `{fun_result, events, preempted}`, each event
  `%{who, timeout_ms, in, out, role, current}`: `role` is the
  `:bench_role` the bench's workers set, `in`/`out` the MFAs where the
  process was scheduled in and out. `preempted` is how many times the OS
  took a CPU away from this VM's scheduler threads meanwhile (their
  involuntary context switches): a process that was running then shows up
  as a long schedule through no fault of its own.
  """
  def with_long_schedule(ms, fun) do
    parent = self()
    collector = spawn(fn -> collect([], parent) end)
    previous = :erlang.system_monitor(collector, [{:long_schedule, ms}])

    try do
      before = scheduler_preemptions()
      result = fun.()
      preempted = scheduler_preemptions() - before
      {result, events(collector), preempted}
    after
      case previous do
        :undefined -> :erlang.system_monitor(:undefined)
        {pid, opts} -> :erlang.system_monitor(pid, opts)
      end
    end
  end

  @doc "Involuntary context switches of this VM's normal scheduler threads, summed."
  def scheduler_preemptions do
    pid = List.to_string(:os.getpid())

    for task <- File.ls!("/proc/#{pid}/task"),
        read_comm(pid, task) =~ ~r/^\d+_scheduler$/,
        {:ok, status} <- [File.read("/proc/#{pid}/task/#{task}/status")],
        [_, n] <- [Regex.run(~r/nonvoluntary_ctxt_switches:\s+(\d+)/, status)],
        reduce: 0 do
      acc -> acc + String.to_integer(n)
    end
  end

  defp events(collector) do
    # Let events that were already sent arrive first.
    Process.sleep(100)
    send(collector, {:get, self()})

    receive do
      {:events, events} -> Enum.reverse(events)
    after
      5_000 -> raise "the long_schedule collector did not answer"
    end
  end

  defp collect(events, parent) do
    receive do
      {:monitor, who, :long_schedule, info} ->
        collect([event(who, info) | events], parent)

      {:get, from} ->
        send(from, {:events, events})
    end
  end

  defp event(who, info) do
    {role, current} =
      if is_pid(who) do
        case Process.info(who, [:dictionary, :current_function]) do
          [dictionary: d, current_function: cf] -> {Keyword.get(d, :bench_role), cf}
          nil -> {:gone, nil}
        end
      else
        {:port, Port.info(who, :name)}
      end

    %{
      who: inspect(who),
      timeout_ms: Keyword.get(info, :timeout),
      in: Keyword.get(info, :in),
      out: Keyword.get(info, :out),
      role: role,
      current: current
    }
  end

  @doc """
  True when an event is `impl`'s (`:caravan` or `:inet_res`): it happened
  in a process whose only job is calling `impl` (the bench's workers), or
  it was scheduled in or out inside one of `impl`'s modules.
  """
  def event_of?(%{role: {impl, _}}, impl), do: true

  def event_of?(%{in: i, out: o, current: c}, impl),
    do: Enum.any?([i, o, c], &mfa_of?(&1, impl))

  defp mfa_of?({m, _f, _a}, :caravan) do
    name = Atom.to_string(m)

    String.starts_with?(name, "Elixir.Caravan.") and
      not String.starts_with?(name, "Elixir.Caravan.Bench")
  end

  defp mfa_of?({m, _f, _a}, :inet_res), do: m in [:inet_res, :inet_dns, :inet_db]
  defp mfa_of?({m, f, _a}, :floor), do: {m, f} == {Caravan.Native, :floor}
  defp mfa_of?(_, _), do: false

  @doc """
  `lookups/6` watched for long_schedule events over `ms` ms:
  `{lookups_result, events, preempted}`.
  """
  def monitored_lookups(ms, impl, total, in_flight, query, ns, expect),
    do: with_long_schedule(ms, fn -> lookups(impl, total, in_flight, query, ns, expect) end)

  @doc "`dist_port_calls/2` watched for long_schedule events: `{elapsed_ms, events, preempted}`."
  def monitored_dist_port_calls(ms, total, impl \\ :caravan),
    do: with_long_schedule(ms, fn -> dist_port_calls(total, impl) end)

  # -- Connection setup -----------------------------------------------------

  @doc "Times `:net_kernel.connect_node(node)`: `{microseconds, result}`."
  def timed_connect(node), do: :timer.tc(fn -> :net_kernel.connect_node(node) end)

  @doc "A TCP connect to ip:port and close, no handshake: `{microseconds, {:ok, :closed}}`."
  def timed_tcp_connect(ip, port) do
    :timer.tc(fn ->
      with {:ok, socket} <- :gen_tcp.connect(ip, port, [:binary, active: false], 5_000) do
        :gen_tcp.close(socket)
        {:ok, :closed}
      end
    end)
  end

  @doc "Disconnects from every connected node."
  def disconnect_all do
    for n <- Node.list(), do: :erlang.disconnect_node(n)
    :ok
  end

  # -- Cluster formation ----------------------------------------------------

  @doc """
  Starts a round: a watcher that notes the OS time (µs) at which this node
  first sees `peers` connected nodes, then the `strategy` (`:caravan` or
  `:dns_poll`, or `:static`, the floor) with `opts`. Returns the OS time (µs) just before the
  strategy was started.
  """
  def start_round(strategy, peers, opts) do
    stop_round()
    parent = self()

    watcher =
      spawn(fn ->
        :ok = :net_kernel.monitor_nodes(true)
        send(parent, {:watching, self()})
        watch(peers, nil, [])
      end)

    receive do
      {:watching, ^watcher} -> :ok
    end

    Process.register(watcher, :bench_mesh_watcher)

    holder =
      spawn(fn ->
        t0 = System.os_time(:microsecond)
        send(parent, {:t0, self(), t0})
        Process.flag(:trap_exit, true)

        {:ok, sup} = Supervisor.start_link([child_spec(strategy, opts)], strategy: :one_for_one)

        receive do
          :stop ->
            Process.exit(sup, :shutdown)

            receive do
              {:EXIT, ^sup, _} -> :ok
            end
        end
      end)

    Process.register(holder, :bench_strategy_holder)

    receive do
      {:t0, ^holder, t0} -> t0
    end
  end

  defp child_spec(:caravan, opts), do: {Caravan.Cluster.DnsStrategy, opts}
  defp child_spec(:dns_poll, opts), do: {Caravan.Bench.DnsPollLike, opts}
  defp child_spec(:static, opts), do: {Caravan.Bench.StaticConnect, opts}

  defp watch(peers, full_at, events) do
    full_at =
      if full_at == nil and length(Node.list()) >= peers,
        do: System.os_time(:microsecond),
        else: full_at

    receive do
      {:nodeup, node} ->
        watch(peers, full_at, [{System.os_time(:microsecond), :up, node} | events])

      {:nodedown, node} ->
        watch(peers, full_at, [{System.os_time(:microsecond), :down, node} | events])

      {:get, from} ->
        send(from, {:full_at, full_at})
        watch(peers, full_at, events)

      {:events, from} ->
        send(from, {:events, Enum.reverse(events)})
        watch(peers, full_at, events)
    end
  end

  @doc "The round's nodeup/nodedown events: `[{os_time_us, :up | :down, node}]`."
  def round_events do
    send(:bench_mesh_watcher, {:events, self()})

    receive do
      {:events, events} -> events
    after
      5_000 -> []
    end
  end

  @doc "The OS time (µs) at which this node first saw the full mesh, or nil."
  def full_at do
    send(:bench_mesh_watcher, {:get, self()})

    receive do
      {:full_at, t} -> t
    after
      5_000 -> nil
    end
  end

  @doc "Stops this node's strategy and watcher (if any) and waits for them."
  def stop_round do
    for name <- [:bench_strategy_holder, :bench_mesh_watcher],
        pid = Process.whereis(name),
        pid != nil do
      ref = Process.monitor(pid)
      if name == :bench_strategy_holder, do: send(pid, :stop), else: Process.exit(pid, :kill)

      receive do
        {:DOWN, ^ref, _, _, _} -> :ok
      after
        10_000 -> Process.exit(pid, :kill)
      end
    end

    :ok
  end
end

defmodule Caravan.Bench.DnsPollLike do
  @moduledoc false
  # The baseline for the formation row: a poller that works the way
  # libcluster's Cluster.Strategy.DNSPoll does (libcluster 3.x,
  # lib/strategy/dns_poll.ex), adapted to SRV records since the peers'
  # ports come from DNS:
  #   - the first poll runs inside init/1 (blocking the start), then one
  #     every poll_interval ms;
  #   - the lookup is OTP's :inet_res with the node's inet configuration and
  #     no options: no EDNS0, inet_res's default timeout and retries, and a
  #     failed lookup reads as "no nodes" (DNSPoll's resolver returns []);
  #   - new nodes are connected one at a time with :net_kernel.connect_node/1
  #     (Cluster.Strategy.connect_nodes/4 does an Enum.reduce over them).
  # DNSPoll itself looks up A records and names nodes basename@ip; an
  # SRV-based Caravan deployment needs the port, so the query is SRV and the
  # node name "<node_sname>-<port>@<target>", the same as Caravan's.
  use GenServer

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @impl true
  def init(opts), do: {:ok, poll(Map.new(opts))}

  @impl true
  def handle_info(:poll, state), do: {:noreply, poll(state)}
  def handle_info(_other, state), do: {:noreply, state}

  defp poll(%{query: query, node_sname: sname, poll_interval: interval} = state) do
    nodes =
      query
      |> String.to_charlist()
      |> :inet_res.lookup(:in, :srv)
      |> Enum.map(fn {_prio, _weight, port, target} -> :"#{sname}-#{port}@#{target}" end)

    connected = Node.list()

    for n <- nodes, n != node(), n not in connected do
      :net_kernel.connect_node(n)
    end

    Process.send_after(self(), :poll, interval)
    state
  end
end

defmodule Caravan.Bench.StaticConnect do
  @moduledoc false
  # The floor of the formation row: the node is given every node name up
  # front (no DNS) and connects to all of them at once, one process each.
  use GenServer

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @impl true
  def init(opts) do
    for n <- Keyword.fetch!(opts, :nodes), n != node(), do: spawn(:net_kernel, :connect_node, [n])
    {:ok, nil}
  end
end
