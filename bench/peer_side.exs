# Code that runs on the bench's nodes (separate OS processes). The bench VM
# compiles this file once and loads the bytecode into every node it starts
# (Caravan.Bench.Peers), so the nodes need nothing but Caravan on their
# code path.

defmodule Caravan.Bench.PeerSide do
  @moduledoc false
  # Round control on one node: distribution (re)started under the name a
  # system needs, a watcher that notes when this node first sees `target`
  # peers, the system's strategy started at a common OS time, the worst
  # discovery lookup latency of the round.

  @cookie :caravan_bench_cookie

  @doc """
  Loads every module of kernel, stdlib, elixir, logger and caravan now, as
  a release booted in embedded mode does, so a first connect does not also
  pay for loading code from disk. Returns the number of modules loaded.
  """
  def preload do
    mods =
      for app <- [:kernel, :stdlib, :elixir, :logger, :caravan],
          :ok = ensure_loaded_app(app),
          {:ok, mods} = :application.get_key(app, :modules),
          mod <- mods,
          do: mod

    # A few modules may not load outside their context; the rest do.
    _ = :code.ensure_modules_loaded(mods)
    {:ok, _} = Application.ensure_all_started(:logger)
    length(mods)
  end

  defp ensure_loaded_app(app) do
    case Application.load(app) do
      :ok -> :ok
      {:error, {:already_loaded, _}} -> :ok
    end
  end

  @doc """
  Makes this node distributed as `name` (longnames), restarting
  distribution when it runs under another name. Returns `name`.
  """
  def distribute(name) do
    if node() != name do
      if node() != :nonode@nohost, do: :ok = :net_kernel.stop()
      {:ok, _} = :net_kernel.start(name, %{name_domain: :longnames})
      true = :erlang.set_cookie(@cookie)
    end

    name
  end

  @doc "Stops distribution (the node is not distributed until `distribute/1`)."
  def undistribute do
    if node() != :nonode@nohost, do: :ok = :net_kernel.stop()
    :ok
  end

  @doc """
  Starts a round: the watcher (target: `target` peers), then, at OS time
  `t0_us` (µs), distribution as `name` (unless nil: already distributed)
  and the `system`'s strategy with `opts`. Returns `:ok` at once.
  """
  def start_round(system, target, opts, t0_us, name) do
    stop_round()
    lookup_reset()

    holder =
      spawn(fn ->
        Process.flag(:trap_exit, true)
        wait = div(t0_us - System.os_time(:microsecond), 1000)
        if wait > 0, do: Process.sleep(wait)
        if name, do: distribute(name)
        start_watcher(target)
        {:ok, sup} = Supervisor.start_link([child_spec(system, opts)], strategy: :one_for_one)

        receive do
          :stop ->
            Process.exit(sup, :shutdown)

            receive do
              {:EXIT, ^sup, _} -> :ok
            end
        end
      end)

    Process.register(holder, :bench_strategy_holder)
    :ok
  end

  defp start_watcher(target) do
    parent = self()

    watcher =
      spawn(fn ->
        :ok = :net_kernel.monitor_nodes(true)
        send(parent, {:watching, self()})
        watch(target, nil)
      end)

    receive do
      {:watching, ^watcher} -> Process.register(watcher, :bench_mesh_watcher)
    end
  end

  defp child_spec(:caravan, opts),
    do: {Caravan.Cluster.DnsStrategy, [{:dns_client, Caravan.Bench.TimedDnsClient} | opts]}

  defp child_spec(:dns_poll, opts), do: {Caravan.Bench.DnsPollLike, opts}
  defp child_spec(:floor_par, opts), do: {Caravan.Bench.Floor, [{:parallel, true} | opts]}
  defp child_spec(:floor_seq, opts), do: {Caravan.Bench.Floor, [{:parallel, false} | opts]}

  defp child_spec(:floor_lower, opts),
    do: {Caravan.Bench.Floor, [{:parallel, true}, {:lower_dials, true} | opts]}

  defp watch(target, full_at) do
    full_at =
      if full_at == nil and length(Node.list()) >= target,
        do: System.os_time(:microsecond),
        else: full_at

    receive do
      {:nodeup, _} -> watch(target, full_at)
      {:nodedown, _} -> watch(target, full_at)
      {:target, t} -> watch(t, nil)
      {:get, from} -> send(from, {:full_at, full_at}) && watch(target, full_at)
    end
  end

  @doc "Sets the watcher's target to `target` peers and forgets when it was last reached."
  def retarget(target) do
    send(Process.whereis(:bench_mesh_watcher), {:target, target})
    :ok
  end

  @doc "The OS time (µs) at which this node first saw its target number of peers, or nil."
  def full_at do
    case Process.whereis(:bench_mesh_watcher) do
      nil ->
        nil

      pid ->
        send(pid, {:get, self()})

        receive do
          {:full_at, t} -> t
        after
          5_000 -> nil
        end
    end
  end

  @doc "Stops this node's strategy and watcher (if any), and drops every connection."
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

    for n <- Node.list(), do: :erlang.disconnect_node(n)
    :ok
  end

  # -- worst discovery lookup of the round (µs) ---------------------------

  defp lookup_ref do
    case :persistent_term.get({__MODULE__, :lookup_max}, nil) do
      nil ->
        # 1: worst lookup (µs); 2, 3: the first lookup's start (OS µs)
        # and duration (µs).
        ref = :atomics.new(3, signed: false)
        :persistent_term.put({__MODULE__, :lookup_max}, ref)
        ref

      ref ->
        ref
    end
  end

  defp lookup_reset do
    :atomics.put(lookup_ref(), 1, 0)
    :atomics.put(lookup_ref(), 2, 0)
    :atomics.put(lookup_ref(), 3, 0)
  end

  @doc """
  The round's first discovery lookup: `{started_at, took}`, OS time and
  duration in µs (`{0, 0}` when none ended yet).
  """
  def first_lookup, do: {:atomics.get(lookup_ref(), 2), :atomics.get(lookup_ref(), 3)}

  @doc "Notes one discovery lookup of `us` µs that ended now."
  def lookup_note(us) do
    ref = lookup_ref()
    started_at = System.os_time(:microsecond) - us
    if :atomics.compare_exchange(ref, 2, 0, started_at) == :ok, do: :atomics.put(ref, 3, us)
    raise_max(ref, us)
  end

  defp raise_max(ref, us) do
    old = :atomics.get(ref, 1)

    if us > old and :atomics.compare_exchange(ref, 1, old, us) != :ok,
      do: raise_max(ref, us),
      else: :ok
  end

  @doc "The worst discovery lookup since the round started, µs."
  def lookup_max, do: :atomics.get(lookup_ref(), 1)
end

defmodule Caravan.Bench.TimedDnsClient do
  @moduledoc false
  # Caravan's own DNS client (Caravan.DnsClient.Native), timed: each
  # lookup's wall time goes to PeerSide.lookup_note/1. Nothing else changes.
  @behaviour Caravan.DnsClient

  @impl true
  def get_nodes(query), do: get_nodes(query, [])

  @impl true
  def get_nodes(query, opts) do
    {us, result} = :timer.tc(Caravan.DnsClient.Native, :get_nodes, [query, opts])
    Caravan.Bench.PeerSide.lookup_note(us)
    result
  end
end

defmodule Caravan.Bench.DnsPollLike do
  @moduledoc false
  # The baseline: what libcluster 3.5.0's Cluster.Strategy.DNSPoll does
  # together with Cluster.Strategy.connect_nodes/4 and disconnect_nodes/4,
  # written again for the bench from a reading of their source (hex.pm is
  # not reachable here, so the real one cannot run). Behaviour kept:
  #
  #   * lookups: OTP's :inet_res.lookup/3 for A, then AAAA, of the query,
  #     one after the other, with the node's resolver settings (the
  #     inetrc); errors read as "no addresses". No EDNS0, inet_res's own
  #     timeout and retries, TCP when a UDP answer is truncated.
  #   * names: `<node_basename>@<address as text>`, this node left out.
  #   * the first poll runs inside init/1 (the supervisor waits for it);
  #     the next is scheduled with send_after(poll_interval) when a poll has
  #     finished, so the period is poll_interval plus the poll's own time.
  #   * nodes listed last poll and missing now are disconnected if
  #     connected (one at a time); then the listed nodes not in
  #     :erlang.nodes(:connected) are connected one at a time with
  #     :net_kernel.connect_node/1, in the order of the set difference
  #     (MapSet); a connect that fails is dropped from the remembered list.
  #   * a log line per connect (info; the bench's nodes log at critical).
  # libcluster also emits :telemetry events per connect; there is no
  # telemetry library on the bench's nodes, so those are not paid for.
  use GenServer
  require Logger

  def start_link(opts), do: GenServer.start_link(__MODULE__, Map.new(opts))

  @impl true
  def init(config), do: {:ok, poll(Map.put(config, :last, MapSet.new()))}

  @impl true
  def handle_info(:poll, state), do: {:noreply, poll(state)}
  def handle_info(_other, state), do: {:noreply, state}

  defp poll(%{query: query, node_basename: basename} = state) do
    {us, addresses} =
      :timer.tc(fn ->
        q = String.to_charlist(query)
        :inet_res.lookup(q, :in, :a) ++ :inet_res.lookup(q, :in, :aaaa)
      end)

    Caravan.Bench.PeerSide.lookup_note(us)
    me = node()

    listed =
      addresses
      |> Enum.map(&:"#{basename}@#{:inet.ntoa(&1)}")
      |> Enum.reject(&(&1 == me))
      |> MapSet.new()

    gone = MapSet.difference(state.last, listed)

    for n <- set_minus_connected(MapSet.to_list(gone), :intersection),
        n != me,
        do: :erlang.disconnect_node(n)

    failed =
      for n <- set_minus_connected(MapSet.to_list(listed), :difference),
          n != me,
          reduce: [] do
        failed ->
          case :net_kernel.connect_node(n) do
            true ->
              Logger.info("[dnspoll-like] connected to #{inspect(n)}")
              failed

            other ->
              Logger.warning("[dnspoll-like] unable to connect to #{inspect(n)}")
              [{n, other} | failed]
          end
      end

    Process.send_after(self(), :poll, state.poll_interval)
    %{state | last: Enum.reduce(failed, listed, fn {n, _}, acc -> MapSet.delete(acc, n) end)}
  end

  # The same list algebra as libcluster's helpers: with nothing connected
  # the list is kept as it is, otherwise it goes through a MapSet (whose
  # order is then the order of the connects).
  defp set_minus_connected(nodes, op) do
    case {nodes, :erlang.nodes(:connected), op} do
      {_, [], :difference} ->
        nodes

      {_, [], :intersection} ->
        []

      {[], _, _} ->
        []

      {_, connected, :difference} ->
        MapSet.difference(MapSet.new(nodes), MapSet.new(connected))

      {_, connected, :intersection} ->
        MapSet.intersection(MapSet.new(nodes), MapSet.new(connected))
    end
  end
end

defmodule Caravan.Bench.Floor do
  @moduledoc false
  # The floors: no DNS at all. The node is given every node name up front
  # and connects to each one not yet connected, all at once (one process
  # per connect, `parallel: true`) or one at a time (`parallel: false`).
  # `lower_dials: true`: only to the names that sort after its own, so no
  # two nodes dial each other at once (a dialing rule, measured).
  use GenServer

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @impl true
  def init(opts) do
    lower_dials = Keyword.get(opts, :lower_dials, false)

    peers =
      for n <- Keyword.fetch!(opts, :nodes),
          n != node(),
          not lower_dials or n > node(),
          do: n

    if Keyword.fetch!(opts, :parallel),
      do: Enum.each(peers, &spawn(:net_kernel, :connect_node, [&1])),
      else: spawn(fn -> Enum.each(peers, &:net_kernel.connect_node/1) end)

    {:ok, nil}
  end
end
