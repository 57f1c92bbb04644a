defmodule Caravan.Cluster.Connector do
  @moduledoc false
  # The strategy's bounded connect pool, as data kept in the strategy's
  # state: each connect runs the topology's connect MFA in one monitored
  # process, at most `connect_concurrency` at once (the rest queue), each
  # bounded by `connect_timeout` ms (the process is killed at the bound).
  # The result comes back as a message that handle/2 turns into
  # {:done, node, result, pool}; it also sends the [:caravan, :connect]
  # telemetry event. When libcluster is loaded (config.libcluster), each
  # connect goes through Cluster.Strategy.connect_nodes/4 with that one node
  # (Caravan.Cluster.Libcluster), so libcluster logs and reports it; a
  # retry of a node whose last connect failed calls the MFA directly, so
  # a peer not up yet costs one libcluster line per streak, not one per poll.
  # It keeps each node's failure streak: when it was last reported (once per
  # report_interval) and the explanation logged (said again when it changes).

  alias Caravan.Cluster.{Config, Libcluster}

  defstruct [
    :topology,
    :connect,
    :list_nodes,
    :timeout,
    :concurrency,
    libcluster: false,
    report_interval: 300_000,
    failing: %{},
    running: %{},
    queue: []
  ]

  @typedoc """
  What the connect MFA returned (`true` is success; `:ignored` when this
  node is not distributed), `:timeout`, `{:raised, banner}` when it raised,
  threw or exited, or `{:exit, reason}` when its process died.
  """
  @type result :: true | false | :ignored | :timeout | {:raised, String.t()} | {:exit, term()}
  @typedoc "`:failing`: per node in a failure streak, `{reported_at_ms | nil, explanation | nil}`."
  @type t :: %__MODULE__{}

  @doc "An empty pool for `config`'s connect MFA, bound and concurrency."
  @spec new(Config.t()) :: t()
  def new(%Config{} = config) do
    %__MODULE__{
      topology: config.topology,
      connect: config.connect,
      list_nodes: config.list_nodes,
      libcluster: config.libcluster,
      report_interval: config.report_interval,
      timeout: config.connect_timeout,
      concurrency: config.connect_concurrency
    }
  end

  @doc """
  Queues the nodes that are neither connecting nor queued, then starts as
  many connects as there are free slots.
  """
  @spec enqueue(t(), [node()]) :: t()
  def enqueue(%__MODULE__{} = pool, nodes) do
    busy = MapSet.new(Enum.map(pool.running, fn {_tag, run} -> run.node end) ++ pool.queue)
    start(%{pool | queue: pool.queue ++ Enum.reject(Enum.uniq(nodes), &MapSet.member?(busy, &1))})
  end

  @doc """
  Handles a message of this pool (a result, a timeout, a connect process's
  `:DOWN`): `{:done, node, result, pool}` (with the next queued connect
  started), or `:unknown` for any other message, including late ones.
  """
  @spec handle(t(), term()) :: {:done, node(), result(), t()} | :unknown
  def handle(%__MODULE__{running: running} = pool, {__MODULE__, tag, result})
      when is_map_key(running, tag) do
    finish(pool, tag, result)
  end

  def handle(%__MODULE__{running: running} = pool, {__MODULE__, :timeout, tag})
      when is_map_key(running, tag) do
    Process.exit(running[tag].pid, :kill)
    finish(pool, tag, :timeout)
  end

  def handle(%__MODULE__{running: running} = pool, {:DOWN, monitor, :process, _pid, reason}) do
    case Enum.find(running, fn {_tag, run} -> run.monitor == monitor end) do
      {tag, _run} -> finish(pool, tag, {:exit, reason})
      nil -> :unknown
    end
  end

  def handle(_pool, _message), do: :unknown

  @doc """
  Drops `nodes` from the queue and kills their connects in flight (no
  result, no telemetry event). Returns `{pool, killed}`: the nodes whose
  connect was running, for which a connection setup may still be pending.
  """
  @spec cancel(t(), [node()]) :: {t(), [node()]}
  def cancel(%__MODULE__{} = pool, nodes) do
    cancel = MapSet.new(nodes)

    {killed, running} =
      Enum.split_with(pool.running, fn {_tag, run} -> MapSet.member?(cancel, run.node) end)

    for {_tag, run} <- killed do
      Process.demonitor(run.monitor, [:flush])
      Process.exit(run.pid, :kill)
      _ = Process.cancel_timer(run.timer)
    end

    pool = %{
      pool
      | running: Map.new(running),
        queue: Enum.reject(pool.queue, &MapSet.member?(cancel, &1)),
        failing: Map.drop(pool.failing, nodes)
    }

    {start(pool), for({_tag, run} <- killed, do: run.node)}
  end

  @doc """
  A failed connect to `node` at `now` (ms): `{true, pool}` to report it,
  the first of a streak and then once per `report_interval`, else
  `{false, pool}`.
  """
  @spec report?(t(), node(), integer()) :: {boolean(), t()}
  def report?(%__MODULE__{failing: failing} = pool, node, now) do
    case failing do
      %{^node => {at, _}} when at != nil and now - at < pool.report_interval -> {false, pool}
      _ -> {true, %{pool | failing: Map.put(failing, node, {now, nil})}}
    end
  end

  @doc """
  A failed connect's explanation `text`: `{true, pool}` to log it, when it
  is the first since a report or differs from the last one logged (a peer
  that came up with another cookie), else `{false, pool}`.
  """
  @spec explained(t(), node(), String.t()) :: {boolean(), t()}
  def explained(%__MODULE__{failing: failing} = pool, node, text) do
    case failing do
      %{^node => {_at, ^text}} -> {false, pool}
      %{^node => {at, _}} -> {true, %{pool | failing: Map.put(failing, node, {at, text})}}
      _ -> {false, pool}
    end
  end

  @doc """
  `node` connected: `{bypassed?, pool}` with its failure streak ended;
  `bypassed?` is true when the connect called the MFA directly under
  libcluster (a retry in a streak), so libcluster logged nothing.
  """
  @spec connected(t(), node()) :: {boolean(), t()}
  def connected(%__MODULE__{failing: failing} = pool, node),
    do:
      {pool.libcluster and is_map_key(failing, node),
       %{pool | failing: Map.delete(failing, node)}}

  @doc """
  Keeps the failure streaks of nodes in `found` (DNS lists them) that are
  not in `connected` (connected since, whoever dialed).
  """
  @spec keep_streaks(t(), [node()], [node()]) :: t()
  def keep_streaks(%__MODULE__{} = pool, found, connected),
    do: %{pool | failing: pool.failing |> Map.take(found) |> Map.drop(connected)}

  @doc "Nodes connecting or queued, in no particular order."
  @spec pending(t()) :: [node()]
  def pending(%__MODULE__{} = pool),
    do: Enum.map(pool.running, fn {_tag, run} -> run.node end) ++ pool.queue

  defp start(%__MODULE__{queue: [node | queue], running: running} = pool)
       when map_size(running) < pool.concurrency do
    owner = self()
    tag = make_ref()
    quiet = %{pool | libcluster: pool.libcluster and not is_map_key(pool.failing, node)}
    {pid, monitor} = spawn_monitor(fn -> send(owner, {__MODULE__, tag, run(quiet, node)}) end)

    run = %{
      node: node,
      pid: pid,
      monitor: monitor,
      timer: Process.send_after(owner, {__MODULE__, :timeout, tag}, pool.timeout),
      started: System.monotonic_time()
    }

    start(%{pool | queue: queue, running: Map.put(running, tag, run)})
  end

  defp start(pool), do: pool

  defp run(%__MODULE__{libcluster: true} = pool, node) do
    Libcluster.connect(pool.topology, pool.connect, pool.list_nodes, node)
  catch
    kind, reason -> {:raised, Exception.format_banner(kind, reason)}
  end

  defp run(%__MODULE__{connect: {m, f, a}}, node) do
    apply(m, f, a ++ [node])
  catch
    kind, reason -> {:raised, Exception.format_banner(kind, reason)}
  end

  defp finish(pool, tag, result) do
    {run, running} = Map.pop(pool.running, tag)
    Process.demonitor(run.monitor, [:flush])
    _ = Process.cancel_timer(run.timer)
    {outcome, reason} = if result == true, do: {:ok, nil}, else: {:error, result}

    # A success ends the streak in connected/2, which tells who dialed.
    failing =
      if result == true,
        do: pool.failing,
        else: Map.put_new(pool.failing, run.node, {nil, nil})

    pool = %{pool | failing: failing}

    Caravan.Telemetry.execute(
      [:caravan, :connect],
      %{duration: System.monotonic_time() - run.started},
      %{topology: pool.topology, node: run.node, result: outcome, reason: reason}
    )

    {:done, run.node, result, start(%{pool | running: running})}
  end
end
