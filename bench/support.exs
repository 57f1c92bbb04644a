defmodule Caravan.Bench.Row do
  @moduledoc """
  One row of the result table: Caravan, the alternative users would pick
  instead, the floor (the cheapest possible way to do the same work), and
  the ratios derived from them.

  `better` says which way is good: `:higher` for rates (calls/s, lookups/s),
  `:lower` for costs (µs, ms, events, threads, MB). `vs_alt` is always
  "times better than the alternative" (> 1 means Caravan wins) and
  `vs_floor` is always "times the floor's cost" (>= 1; 1 means at the floor).
  `target` is `{:vs_alt_at_least, x}`, `{:vs_floor_at_most, x}`, a list of
  those, `{:caravan_at_most, x}`, or nil (informational row).
  """
  defstruct [
    :group,
    :metric,
    :caravan,
    :alt,
    :floor,
    :unit,
    :better,
    :target,
    :note,
    alt_name: nil,
    floor_name: nil
  ]

  @doc "Caravan vs the alternative: > 1 means Caravan is better."
  def vs_alt(%{caravan: c, alt: a, better: :higher}) when is_number(c) and is_number(a) and a > 0,
    do: c / a

  def vs_alt(%{caravan: c, alt: a, better: :lower})
      when is_number(c) and is_number(a) and c > 0 and a >= 0,
      do: a / c

  def vs_alt(_), do: nil

  @doc "Caravan's cost in floors: 1 means as cheap as the floor."
  def vs_floor(%{caravan: c, floor: f, better: :higher})
      when is_number(c) and is_number(f) and c > 0,
      do: f / c

  def vs_floor(%{caravan: c, floor: f, better: :lower})
      when is_number(c) and is_number(f) and f > 0,
      do: c / f

  def vs_floor(_), do: nil

  @doc "true/false when the row has a target, nil otherwise."
  def met?(%{target: nil}), do: nil

  def met?(%{target: targets} = row) when is_list(targets),
    do: Enum.all?(targets, &met1?(row, &1))

  def met?(%{target: target} = row), do: met1?(row, target)

  defp met1?(row, {:vs_alt_at_least, x}), do: (vs_alt(row) || 0) >= x
  defp met1?(row, {:vs_alt_above, x}), do: (vs_alt(row) || 0) > x
  defp met1?(row, {:vs_floor_at_most, x}), do: (r = vs_floor(row)) != nil and r <= x
  defp met1?(%{caravan: c}, {:caravan_at_most, x}), do: is_number(c) and c <= x

  def target_text(%{target: nil}), do: "-"
  def target_text(%{target: t}) when is_list(t), do: Enum.map_join(t, ", ", &target1/1)
  def target_text(%{target: t}), do: target1(t)

  defp target1({:vs_alt_at_least, 1.0}), do: "not slower than alt"
  defp target1({:vs_alt_at_least, x}), do: ">= #{fmt(x)}x alt"
  defp target1({:vs_alt_above, x}), do: "> #{fmt(x)}x alt"
  defp target1({:vs_floor_at_most, x}), do: "<= #{fmt(x)}x floor"
  defp target1({:caravan_at_most, x}), do: "<= #{fmt(x)}"

  @doc "A number for the table: 3 significant digits, thousands kept."
  def fmt(nil), do: "-"
  def fmt(x) when is_integer(x), do: Integer.to_string(x)
  def fmt(x) when is_float(x) and x >= 100, do: x |> round() |> Integer.to_string()
  def fmt(x) when is_float(x) and x >= 10, do: :erlang.float_to_binary(x, decimals: 1)
  def fmt(x) when is_float(x), do: :erlang.float_to_binary(x, decimals: 2)
  def fmt(x), do: to_string(x)

  def ratio(nil), do: "-"
  def ratio(x), do: fmt(x) <> "x"
end

defmodule Caravan.Bench.Table do
  @moduledoc "Prints rows as an aligned text table and as markdown."
  alias Caravan.Bench.Row

  @headers [
    "#",
    "metric",
    "Caravan",
    "alternative",
    "floor",
    "unit",
    "vs alt",
    "x floor",
    "target",
    "met"
  ]

  defp cells(%Row{} = r) do
    met =
      case Row.met?(r) do
        nil -> "-"
        true -> "yes"
        false -> "NO"
      end

    [
      to_string(r.group),
      r.metric,
      Row.fmt(r.caravan),
      Row.fmt(r.alt),
      Row.fmt(r.floor),
      r.unit,
      Row.ratio(Row.vs_alt(r)),
      Row.ratio(Row.vs_floor(r)),
      Row.target_text(r),
      met
    ]
  end

  @doc "The table as aligned plain text."
  def text(rows) do
    lines = [@headers | Enum.map(rows, &cells/1)]

    widths =
      lines
      |> Enum.zip_with(& &1)
      |> Enum.map(fn column -> column |> Enum.map(&String.length/1) |> Enum.max() end)

    lines
    |> Enum.map(fn line ->
      line
      |> Enum.zip(widths)
      |> Enum.with_index()
      |> Enum.map_join("  ", fn {{cell, w}, i} ->
        if i in [1, 5, 8], do: String.pad_trailing(cell, w), else: String.pad_leading(cell, w)
      end)
      |> String.trim_trailing()
    end)
    |> List.insert_at(1, Enum.map_join(widths, "  ", &String.duplicate("-", &1)))
    |> Enum.join("\n")
  end

  @doc "The table as markdown."
  def markdown(rows) do
    header = "| " <> Enum.join(@headers, " | ") <> " |"

    align =
      "|" <>
        Enum.map_join(@headers, "|", fn h ->
          if h in ["metric", "unit", "target"], do: "---", else: "---:"
        end) <> "|"

    body =
      Enum.map(rows, fn r ->
        "| " <> Enum.map_join(cells(r), " | ", &String.replace(&1, "|", "\\|")) <> " |"
      end)

    Enum.join([header, align | body], "\n")
  end

  @doc "Notes of the rows that have one, as a list."
  def notes(rows) do
    for %Row{note: note} = r <- rows, note not in [nil, ""], do: "#{r.group} #{r.metric}: #{note}"
  end
end

defmodule Caravan.Bench.Stats do
  @moduledoc "Small statistics helpers."

  @doc "The p-th percentile (0..100) of a list of numbers, nearest rank."
  def percentile([], _p), do: nil

  def percentile(values, p) do
    sorted = Enum.sort(values)
    n = length(sorted)
    rank = max(1, min(n, ceil(p / 100 * n)))
    Enum.at(sorted, rank - 1)
  end

  def median(values), do: percentile(values, 50)
end

defmodule Caravan.Bench.Peers do
  @moduledoc """
  Real BEAM nodes for the bench, as separate OS processes started with OTP's
  `:peer` and controlled over stdio (the bench VM is not distributed).

  Kinds: `:caravan` (Caravan's vm.args flags, no epmd), `:epmd` (the
  standard epmd client talking to the bench's own epmd on the given port),
  `:plain` (not distributed, nothing of Caravan loaded).
  """

  @cookie "caravan_bench_cookie"

  @doc """
  Starts a node. Options: `:kind` (`:caravan`), `:name`, `:host`, `:ip`
  (the address it listens on), `:epmd_port` (for `:epmd`), `:inetrc`,
  `:args` (more erl arguments), `:log_level` (`:warning`), `:preload` (load every module of kernel,
  stdlib, elixir, logger and caravan after boot, as a release in embedded
  mode does). Returns `{peer, node}`.
  """
  def start(opts) do
    kind = Keyword.get(opts, :kind, :caravan)

    dist =
      case kind do
        :plain ->
          []

        :caravan ->
          ["-start_epmd", "false", "-epmd_module", "Elixir.Caravan.Epmd.Client"] ++
            ["-kernel", "inet_dist_use_interface", ip_term(opts[:ip])]

        :epmd ->
          # The standard client; the bench's own epmd runs on epmd_port.
          ["-start_epmd", "false"] ++
            ["-kernel", "inet_dist_use_interface", ip_term(opts[:ip])] ++
            ["-kernel", "inet_dist_listen_min", "4700", "-kernel", "inet_dist_listen_max", "4700"]
      end

    args =
      dist ++
        [
          "-setcookie",
          @cookie,
          "-kernel",
          "logger_level",
          to_string(Keyword.get(opts, :log_level, :warning))
        ] ++
        Caravan.Test.BeamNode.code_path_args() ++ Keyword.get(opts, :args, [])

    env =
      if(opts[:inetrc], do: [{~c"ERL_INETRC", String.to_charlist(opts[:inetrc])}], else: []) ++
        if kind == :epmd,
          do: [{~c"ERL_EPMD_PORT", ~c"#{Keyword.fetch!(opts, :epmd_port)}"}],
          else: []

    peer_opts = %{
      connection: :standard_io,
      args: Enum.map(args, &String.to_charlist/1),
      env: env,
      wait_boot: 60_000
    }

    peer_opts =
      if kind == :plain,
        do: peer_opts,
        else:
          Map.merge(peer_opts, %{
            name: String.to_charlist(opts[:name]),
            host: String.to_charlist(opts[:host]),
            longnames: true
          })

    {:ok, peer, node} = :peer.start(peer_opts)
    load_bench_modules(peer)
    if opts[:preload], do: call(peer, Caravan.Bench.PeerSide, :preload, [])
    {peer, node}
  end

  @doc "Starts several nodes, `concurrency` boots at a time; `[{peer, node}]` in order."
  def start_many(opts_list, concurrency \\ 2) do
    opts_list
    |> Task.async_stream(&start/1, max_concurrency: concurrency, timeout: 120_000, ordered: true)
    |> Enum.map(fn {:ok, result} -> result end)
  end

  @doc "Calls `m.f(a)` on the node (`timeout` ms, default 120 s)."
  def call(peer, m, f, a, timeout \\ 120_000), do: :peer.call(peer, m, f, a, timeout)

  @doc "Stops the node; never raises."
  def stop(peer) do
    :peer.stop(peer)
  catch
    _, _ -> :ok
  end

  def stop_all(peers), do: Enum.each(peers, &stop/1)

  @doc "The node's OS pid."
  def os_pid(peer), do: call(peer, :os, :getpid, []) |> List.to_integer()

  # The bench's peer-side module (bench/peer_side.exs), compiled once in the
  # bench VM and loaded into every node from its bytecode.
  defp load_bench_modules(peer) do
    for {mod, bin} <- :persistent_term.get({__MODULE__, :peer_modules}, []) do
      {:module, ^mod} = call(peer, :code, :load_binary, [mod, ~c"bench/peer_side.exs", bin])
    end
  end

  @doc "Compiles the modules that run on the nodes and remembers their bytecode."
  def compile_peer_modules(file) do
    modules = Code.compile_file(file)
    :persistent_term.put({__MODULE__, :peer_modules}, modules)
    modules
  end

  defp ip_term({a, b, c, d}), do: "{#{a},#{b},#{c},#{d}}"
end

defmodule Caravan.Bench.OsProcs do
  @moduledoc """
  OS processes the bench starts outside `:peer` (dnsmasq, epmd). Their pids
  go to `$CARAVAN_BENCH_PIDFILE` too, so `bench/run` can kill them if the
  bench VM itself dies.
  """

  @doc "Records an OS pid for bench/run's exit trap."
  def record(os_pid) do
    case System.get_env("CARAVAN_BENCH_PIDFILE") do
      nil -> :ok
      "" -> :ok
      file -> File.write!(file, "#{os_pid}\n", [:append])
    end
  end

  @doc """
  Starts `epmd -port port -address ips` in the foreground (so the bench owns
  its OS pid and can kill it) and waits until it accepts connections.
  Returns `%{os_pid, port}`.
  """
  def start_epmd(port, ips) when port != 4369 do
    exe = System.find_executable("epmd") || raise "epmd not found"
    address = Enum.map_join(ips, ",", &to_string(:inet.ntoa(&1)))

    os_port =
      Port.open({:spawn_executable, exe}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ["-port", "#{port}", "-address", address]
      ])

    {:os_pid, os_pid} = Port.info(os_port, :os_pid)
    record(os_pid)
    epmd = %{os_pid: os_pid, port: os_port, epmd_port: port}

    ok =
      Enum.any?(1..50, fn _ ->
        case :gen_tcp.connect({127, 0, 0, 1}, port, [], 200) do
          {:ok, s} ->
            :gen_tcp.close(s)
            true

          _ ->
            Process.sleep(100)
            false
        end
      end)

    unless ok do
      stop_epmd(epmd)
      raise "epmd on port #{port} did not start"
    end

    epmd
  end

  @doc "Kills the bench's epmd by its OS pid."
  def stop_epmd(%{os_pid: os_pid, port: port}) do
    System.cmd("kill", ["-TERM", "#{os_pid}"], stderr_to_stdout: true)

    receive do
      {^port, {:exit_status, _}} -> :ok
    after
      3_000 -> System.cmd("kill", ["-KILL", "#{os_pid}"], stderr_to_stdout: true)
    end

    :ok
  end
end

defmodule Caravan.Bench.Log do
  @moduledoc "Progress lines on stderr, so stdout keeps only the table."
  def say(text) do
    {ms, _} = :erlang.statistics(:wall_clock)
    IO.puts(:stderr, "[bench #{:erlang.float_to_binary(ms / 1000, decimals: 1)}s] " <> text)
  end
end
