defmodule Caravan.Test.BeamNode do
  @moduledoc """
  Starts real BEAM nodes as separate OS processes with OTP's `:peer`, using
  Caravan's real vm.args flags and no epmd. The test runner controls them
  over stdio (`connection: :standard_io`), so it need not be distributed.
  """

  @cookie "caravan_test_cookie"

  @doc """
  Starts `erl -name <name>@<host>` listening on `ip` (a "host" on loopback).

  Options: `:proto_dist` (true adds Caravan 1.x's `-proto_dist` flag),
  `:epmd_flag` (false leaves out `-epmd_module`, for the kernel-parameter form),
  `:inetrc` (path to an inetrc for host-name resolution), `:cookie` (a
  string; the tests' shared cookie by default), `:args` (more erl arguments
  as strings), `:env` (more OS environment, `[{"NAME", "value"}]`). `ip` is an IPv4 or IPv6 tuple. Nodes boot with Logger level
  `:warning`. Returns `{peer_pid, node}`; see `start_result/4` for a boot
  that may fail.
  """
  def start(name, host, ip, opts \\ []) do
    {:ok, peer, node} = start_result(name, host, ip, opts)
    {peer, node}
  end

  @doc """
  Like `start/4` but returns `:peer.start/1`'s result: `{:ok, peer, node}`
  or `{:error, reason}` when the node does not boot.
  """
  def start_result(name, host, ip, opts \\ []) do
    env =
      for {k, v} <-
            if(opts[:inetrc], do: [{"ERL_INETRC", opts[:inetrc]}], else: []) ++
              Keyword.get(opts, :env, []),
          do: {String.to_charlist(k), String.to_charlist(v)}

    args = erl_args(ip, opts)

    :peer.start(%{
      name: String.to_charlist(name),
      host: String.to_charlist(host),
      longnames: true,
      connection: :standard_io,
      args: Enum.map(args, &String.to_charlist/1),
      env: env,
      wait_boot: 30_000
    })
  end

  @doc """
  The erl arguments (strings) `start/4` gives a node listening on `ip`,
  without `-name`: Caravan's flags, the interface, the cookie, the code
  path, then `opts[:args]`. Options as for `start/4`.
  """
  def erl_args(ip, opts \\ []) do
    ["-start_epmd", "false"] ++
      if(Keyword.get(opts, :epmd_flag, true),
        do: ["-epmd_module", "Elixir.Caravan.Epmd.Client"],
        else: []
      ) ++
      if(opts[:proto_dist], do: ["-proto_dist", "Elixir.Caravan.Epmd.Dist"], else: []) ++
      ["-kernel", "inet_dist_use_interface", ip_term(ip)] ++
      ["-setcookie", Keyword.get(opts, :cookie, @cookie)] ++
      ["-kernel", "logger_level", "warning"] ++
      code_path_args() ++ Keyword.get(opts, :args, [])
  end

  @doc "Calls `m.f(a)` on the node (30 s bound)."
  def call(peer, m, f, a), do: :peer.call(peer, m, f, a, 30_000)

  @doc "Stops the node (its OS process exits)."
  def stop(peer) do
    :peer.stop(peer)
  catch
    :exit, _ -> :ok
  end

  @doc """
  Starts `Caravan.Cluster.DnsStrategy` on the node with `opts`, under a
  supervisor owned by a process that outlives the `:peer.call/4`.
  `log_level` is the node's Logger level from then on (OTP progress
  reports stay filtered out).
  """
  def start_strategy(peer, opts, log_level \\ :warning) do
    {:ok, _} = call(peer, :application, :ensure_all_started, [:logger])
    :ok = call(peer, __MODULE__, :remote_log_level, [log_level])
    call(peer, __MODULE__, :remote_start_strategy, [opts])
  end

  @doc false
  # Runs on the peer node.
  def remote_log_level(level) do
    :logger.add_primary_filter(:no_progress, {&:logger_filters.progress/2, :stop})
    :logger.set_primary_config(:level, level)
  end

  @doc false
  # Runs on the peer node.
  def remote_start_strategy(opts) do
    parent = self()

    spawn(fn ->
      {:ok, sup} =
        Supervisor.start_link([{Caravan.Cluster.DnsStrategy, opts}], strategy: :one_for_one)

      send(parent, {:started, sup})
      Process.sleep(:infinity)
    end)

    receive do
      {:started, sup} -> {:ok, sup}
    after
      10_000 -> {:error, :timeout}
    end
  end

  @doc """
  True when every node of `nodes` (`[{peer, node}]`) is connected to exactly
  all the others.
  """
  def full_mesh?(nodes) do
    all = nodes |> Enum.map(&elem(&1, 1)) |> Enum.sort()

    Enum.all?(nodes, fn {peer, node} ->
      Enum.sort(call(peer, Node, :list, [])) == all -- [node]
    end)
  end

  @doc """
  Starts a process on the node that records every `nodedown` it sees from
  now on; `nodedowns/1` reads them.
  """
  def watch_nodedowns(peer), do: :ok = call(peer, __MODULE__, :remote_watch_nodedowns, [])

  @doc "The nodes that went down on the node since `watch_nodedowns/1`, oldest first."
  def nodedowns(peer), do: call(peer, __MODULE__, :remote_nodedowns, [])

  @doc false
  def remote_watch_nodedowns do
    parent = self()

    spawn(fn ->
      Process.register(self(), :caravan_test_nodedowns)
      :ok = :net_kernel.monitor_nodes(true)
      send(parent, :watching)
      nodedown_loop([])
    end)

    receive do
      :watching -> :ok
    end
  end

  @doc false
  def remote_nodedowns do
    send(:caravan_test_nodedowns, {:get, self()})

    receive do
      {:nodedowns, downs} -> downs
    end
  end

  defp nodedown_loop(downs) do
    receive do
      {:nodedown, node} ->
        nodedown_loop([node | downs])

      {:nodeup, _node} ->
        nodedown_loop(downs)

      {:get, from} ->
        send(from, {:nodedowns, Enum.reverse(downs)})
        nodedown_loop(downs)
    end
  end

  @doc "Waits until `fun` returns a truthy value, polling every 100 ms, up to `ms`."
  def eventually(fun, ms \\ 30_000) do
    deadline = System.monotonic_time(:millisecond) + ms
    do_eventually(fun, deadline)
  end

  defp do_eventually(fun, deadline) do
    case fun.() do
      result when result not in [nil, false] ->
        result

      _ ->
        if System.monotonic_time(:millisecond) > deadline do
          false
        else
          Process.sleep(100)
          do_eventually(fun, deadline)
        end
    end
  end

  @doc "True when something accepts TCP connections on ip:port."
  def listening?(ip, port) do
    case :gen_tcp.connect(ip, port, [], 1_000) do
      {:ok, socket} ->
        :gen_tcp.close(socket)
        true

      {:error, _} ->
        false
    end
  end

  defp ip_term(ip), do: "{" <> (ip |> Tuple.to_list() |> Enum.join(",")) <> "}"

  @doc "The `-pa` arguments that put caravan, elixir and logger on a node's code path."
  def code_path_args do
    Enum.flat_map([:caravan, :elixir, :logger], fn app ->
      ["-pa", Application.app_dir(app, "ebin")]
    end)
  end
end
