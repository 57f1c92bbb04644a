defmodule Caravan.Bench.Connect do
  @moduledoc """
  Row 3: connection setup. The first `Node.connect` (`:net_kernel.connect_node/1`)
  from a client node to a fresh node that nothing has connected to yet:

    * Caravan: client and targets run with `-start_epmd false -epmd_module
      Elixir.Caravan.Epmd.Client`; the port comes from the target's name, no
      port mapper is asked.
    * Alternative: the standard path, client and targets registered with an
      epmd daemon the bench starts on port 4469 (`ERL_EPMD_PORT=4469`); a
      connect first asks the target host's epmd for the port.
    * Floor: a plain TCP connect (and close) from the client to the same
      kind of target's distribution port, no handshake.

  All nodes are separate OS processes, each on its own 127.0.1.x address,
  all listening on port 4700; the time is taken inside the client node. The
  targets are booted in batches before the measurements of the batch start
  (boot time is not measured), and each one is connected to exactly once.
  A reconnect row (disconnect, wait until the target has noticed, connect
  again) adds many more samples on warm nodes.
  """
  alias Caravan.Bench.{Log, OsProcs, Peers, Row, Stats}

  @epmd_port 4469
  @port 4700
  # Fresh targets booted at once, per path.
  @batch 9

  def run(%{quick: quick}) do
    fresh = if quick, do: 3, else: 26
    batch = @batch
    reconnects = if quick, do: 20, else: 100

    # Index 0 is the warm-up target of each kind (loads the client's code).
    indices = Enum.to_list(0..fresh)
    # epmd listens on the addresses of the epmd-path nodes only (it takes
    # at most 16): the client, one batch of targets, the reconnect target.
    epmd_ips = [{127, 0, 1, 101}, ip(:epmd, 99) | for(i <- 0..(batch - 1), do: ip(:epmd, i))]
    epmd = OsProcs.start_epmd(@epmd_port, epmd_ips)
    started = :ets.new(:bench_connect_peers, [:public])

    try do
      {cc, _} =
        track(
          started,
          Peers.start(
            preload: true,
            kind: :caravan,
            name: "bench_cc-#{@port}",
            host: "127.0.1.100",
            ip: {127, 0, 1, 100}
          )
        )

      {ec, _} =
        track(
          started,
          Peers.start(
            preload: true,
            kind: :epmd,
            name: "bench_ec",
            host: "127.0.1.101",
            ip: {127, 0, 1, 101},
            epmd_port: @epmd_port
          )
        )

      clients = %{caravan: cc, epmd: ec}

      samples =
        indices
        |> Enum.chunk_every(batch)
        |> Enum.flat_map(fn chunk ->
          Log.say("row 3: booting #{2 * length(chunk)} fresh nodes")

          targets =
            for i <- chunk, kind <- [:caravan, :epmd] do
              {kind, i, track(started, Peers.start(target_opts(kind, i)))}
            end

          Log.say("row 3: first connects to #{2 * length(chunk)} fresh nodes")

          # Caravan and epmd alternate, target by target.
          measured =
            for {kind, i, {_peer, node}} <- targets do
              {us, true} =
                Peers.call(clients[kind], Caravan.Bench.PeerSide, :timed_connect, [node])

              {kind, i, us}
            end

          # The floor, once the handshakes are done: a TCP connect alone.
          floors =
            for {kind, i, _} <- targets, i != 0 do
              {us, {:ok, _}} =
                Peers.call(clients[kind], Caravan.Bench.PeerSide, :timed_tcp_connect, [
                  ip(kind, i),
                  @port
                ])

              {:"#{kind}_floor", i, us}
            end

          for {_kind, _i, {peer, _node}} <- targets, do: Peers.stop(peer)
          Enum.reject(measured, fn {_, i, _} -> i == 0 end) ++ floors
        end)

      first = fn kind -> for {^kind, _i, us} <- samples, do: us end

      Log.say("row 3: #{reconnects} reconnects per path")
      re = reconnect_samples(clients, started, reconnects)

      [
        %Row{
          group: 3,
          metric: "first connect to a fresh node, median of #{fresh}",
          caravan: Stats.median(first.(:caravan)),
          alt: Stats.median(first.(:epmd)),
          floor: Stats.median(first.(:caravan_floor) ++ first.(:epmd_floor)),
          unit: "µs",
          better: :lower,
          target: {:vs_alt_above, 1.0},
          note:
            "p90 Caravan #{Stats.percentile(first.(:caravan), 90)} µs, epmd #{Stats.percentile(first.(:epmd), 90)} µs"
        },
        %Row{
          group: 3,
          metric: "reconnect (disconnect, connect), median of #{reconnects}",
          caravan: Stats.median(re.caravan),
          alt: Stats.median(re.epmd),
          floor: Stats.median(re.floor),
          unit: "µs",
          better: :lower
        }
      ]
    after
      for [{peer}] <- :ets.match(started, {:"$1"}), do: Peers.stop(peer)
      OsProcs.stop_epmd(epmd)
    end
  end

  # One warm target per path, connected again and again.
  defp reconnect_samples(clients, started, count) do
    targets =
      for kind <- [:caravan, :epmd], into: %{} do
        {peer, node} = track(started, Peers.start(target_opts(kind, 99)))
        {true, _} = {Peers.call(clients[kind], :net_kernel, :connect_node, [node]), node}
        {kind, {peer, node}}
      end

    samples =
      for _ <- 1..count, kind <- [:caravan, :epmd], reduce: %{caravan: [], epmd: [], floor: []} do
        acc ->
          {peer, node} = targets[kind]
          client = clients[kind]
          client_node = Peers.call(client, Kernel, :node, [])
          true = Peers.call(client, :erlang, :disconnect_node, [node])
          # Wait until the target has seen the connection go.
          wait_until(fn -> client_node not in Peers.call(peer, Node, :list, []) end)
          {us, true} = Peers.call(client, Caravan.Bench.PeerSide, :timed_connect, [node])
          acc = Map.update!(acc, kind, &[us | &1])

          if kind == :caravan do
            {floor_us, {:ok, _}} =
              Peers.call(client, Caravan.Bench.PeerSide, :timed_tcp_connect, [ip(kind, 99), @port])

            Map.update!(acc, :floor, &[floor_us | &1])
          else
            acc
          end
      end

    for {_kind, {peer, _}} <- targets, do: Peers.stop(peer)
    samples
  end

  defp target_opts(:caravan, i),
    do: [
      preload: true,
      kind: :caravan,
      name: "bench_c#{i}-#{@port}",
      host: ip_text(ip(:caravan, i)),
      ip: ip(:caravan, i)
    ]

  defp target_opts(:epmd, i),
    do: [
      preload: true,
      kind: :epmd,
      name: "bench_e#{i}",
      host: ip_text(ip(:epmd, i)),
      ip: ip(:epmd, i),
      epmd_port: @epmd_port
    ]

  # Targets of one batch take slots 0..batch-1 (a stopped node's address
  # is used again in the next batch); 99 is the reconnect target.
  defp ip(:caravan, 99), do: {127, 0, 1, 209}
  defp ip(:epmd, 99), do: {127, 0, 1, 249}
  defp ip(:caravan, i), do: {127, 0, 1, 110 + rem(i, @batch)}
  defp ip(:epmd, i), do: {127, 0, 1, 150 + rem(i, @batch)}
  defp ip_text(ip), do: ip |> :inet.ntoa() |> to_string()

  defp track(table, {peer, _node} = started) do
    :ets.insert(table, {peer})
    started
  end

  defp wait_until(fun, tries \\ 200) do
    cond do
      fun.() -> :ok
      tries == 0 -> raise "row 3: a disconnect was not seen within 10 s"
      true -> Process.sleep(50) && wait_until(fun, tries - 1)
    end
  end
end
