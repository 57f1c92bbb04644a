defmodule Caravan.Bench.Stats do
  @moduledoc false

  @doc """
  The median (nearest rank) of a list of numbers and `:timeout`s (which
  sort after every number); nil for [].
  """
  def median([]), do: nil

  def median(values) do
    sorted = Enum.sort(values)
    Enum.at(sorted, div(length(sorted) - 1, 2))
  end

  @doc """
  The `p`th percentile (nearest rank, `p` in 1..100) of a list of
  numbers; nil for [].
  """
  def percentile([], _p), do: nil

  def percentile(values, p) do
    sorted = Enum.sort(values)
    Enum.at(sorted, max(ceil(p / 100 * length(sorted)) - 1, 0))
  end

  @doc "A number for the table: integers as they are, floats to 3 significant digits."
  def fmt(nil), do: "-"
  def fmt(:timeout), do: "timeout"
  def fmt(x) when is_integer(x), do: Integer.to_string(x)
  def fmt(x) when is_float(x) and x >= 100, do: x |> round() |> Integer.to_string()
  def fmt(x) when is_float(x) and x >= 10, do: :erlang.float_to_binary(x, decimals: 1)
  def fmt(x) when is_float(x), do: :erlang.float_to_binary(x, decimals: 2)

  @doc "`a / b` as `\"1.23x\"`, `-` when either is missing or b is 0."
  def ratio(a, b) when is_number(a) and is_number(b) and b > 0, do: fmt(a / b) <> "x"
  def ratio(_, _), do: "-"
end

defmodule Caravan.Bench.Table do
  @moduledoc false

  @doc "Rows (lists of strings, the first one the header) as aligned text."
  def text([header | _] = rows) do
    widths =
      rows
      |> Enum.zip_with(& &1)
      |> Enum.map(fn col -> col |> Enum.map(&String.length/1) |> Enum.max() end)

    line = fn row ->
      row
      |> Enum.zip(widths)
      |> Enum.with_index()
      |> Enum.map_join("  ", fn
        {{cell, w}, 0} -> String.pad_trailing(cell, w)
        {{cell, w}, _} -> String.pad_leading(cell, w)
      end)
    end

    [line.(header), Enum.map_join(widths, "  ", &String.duplicate("-", &1))]
    |> Kernel.++(Enum.map(tl(rows), line))
    |> Enum.join("\n")
  end

  @doc "The same rows as a markdown table."
  def markdown([header | body]) do
    row = fn cells -> "| " <> Enum.join(cells, " | ") <> " |" end
    align = "|---|" <> String.duplicate("---:|", length(header) - 1)
    Enum.join([row.(header), align | Enum.map(body, row)], "\n")
  end
end

defmodule Caravan.Bench.Peers do
  @moduledoc false
  # Real BEAM nodes as separate OS processes, started with OTP's :peer and
  # controlled over stdio (the bench VM is not distributed). They boot
  # with Caravan's flags (no epmd, Caravan.Epmd.Client, the interface
  # `ip`) but not distributed: each round gives them the name its system
  # needs (Caravan.Bench.PeerSide.distribute/1).

  @doc """
  Starts a node listening on `ip` (tuple). Options: `:inetrc` (a file the
  node's OTP resolver reads), `:nameserver` ("IP:PORT", its
  -caravan_nameservers), `:epmd_port` (the node runs OTP's own epmd client
  against an epmd on that port, ERL_EPMD_PORT, instead of Caravan's epmd
  module). Returns `%{peer, os_pid, ip}`.
  """
  def start(ip, opts) do
    dist =
      case opts[:epmd_port] do
        nil -> ["-start_epmd", "false", "-epmd_module", "Elixir.Caravan.Epmd.Client"]
        _port -> ["-start_epmd", "false"]
      end

    args =
      dist ++
        ["-kernel", "inet_dist_use_interface", ip_term(ip), "-kernel", "logger_level", "critical"] ++
        if(opts[:nameserver], do: ["-caravan_nameservers", opts[:nameserver]], else: []) ++
        ["+S", "1:1"] ++ Caravan.Test.BeamNode.code_path_args()

    env =
      for {key, var} <- [inetrc: ~c"ERL_INETRC", epmd_port: ~c"ERL_EPMD_PORT"],
          value = opts[key],
          do: {var, String.to_charlist(to_string(value))}

    {:ok, peer, _not_distributed} =
      :peer.start(%{
        connection: :standard_io,
        args: Enum.map(args, &String.to_charlist/1),
        env: env,
        wait_boot: 60_000
      })

    for {mod, bin} <- :persistent_term.get({__MODULE__, :peer_modules}) do
      {:module, ^mod} = call(peer, :code, :load_binary, [mod, ~c"bench/peer_side.exs", bin])
    end

    call(peer, Caravan.Bench.PeerSide, :preload, [])
    %{peer: peer, os_pid: call(peer, :os, :getpid, []) |> List.to_integer(), ip: ip}
  end

  @doc "Starts one node per ip (`start/2` with `opts`), two boots at a time, in order."
  def start_many(ips, opts) do
    ips
    |> Task.async_stream(&start(&1, opts),
      max_concurrency: 2,
      timeout: 120_000,
      ordered: true
    )
    |> Enum.map(fn {:ok, node} -> node end)
  end

  @doc "Calls `m.f(a)` on the node (60 s bound)."
  def call(peer, m, f, a), do: :peer.call(peer, m, f, a, 60_000)

  @doc "Calls `fun.(node)` for every node at once; results in order."
  def each(nodes, fun) do
    nodes
    |> Task.async_stream(fun, max_concurrency: max(length(nodes), 1), timeout: 120_000)
    |> Enum.map(fn {:ok, result} -> result end)
  end

  @doc "Stops a node; never raises."
  def stop(%{peer: peer}) do
    :peer.stop(peer)
  catch
    _, _ -> :ok
  end

  @doc "Compiles the modules that run on the nodes and keeps their bytecode."
  def compile_peer_modules(file),
    do: :persistent_term.put({__MODULE__, :peer_modules}, Code.compile_file(file))

  @doc """
  User + system CPU time of an OS process so far, in clock ticks (USER_HZ,
  100/s); with `reaped_children: true` also that of the children it has
  waited for (a server that forks per connection). 0 when the process is
  gone.
  """
  def cpu_ticks(os_pid, opts \\ []) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} ->
        # Fields after the ")" that ends the command name: utime is the
        # 12th, stime the 13th, cutime and cstime (reaped children) the
        # 14th and 15th.
        [_, rest] = String.split(stat, ") ", parts: 2)
        fields = String.split(rest, " ")
        last = if Keyword.get(opts, :reaped_children, false), do: 14, else: 12
        Enum.sum(for i <- 11..last, do: String.to_integer(Enum.at(fields, i)))

      _ ->
        0
    end
  end

  defp ip_term({a, b, c, d}), do: "{#{a},#{b},#{c},#{d}}"
end

defmodule Caravan.Bench.QueryLog do
  @moduledoc false
  # Counts the queries dnsmasq logged (--log-queries to a file) between two
  # offsets of that file; one "query[TYPE] name from ..." line per query
  # received, over UDP or TCP.

  @doc "The log's current size (an offset for count/2)."
  def offset(path), do: File.stat!(path).size

  @doc "Queries logged since `offset`: `%{total, by_type: %{type => n}}`."
  def count(path, offset) do
    # dnsmasq writes its log lines as they happen; give it a moment.
    Process.sleep(50)
    {:ok, file} = :file.open(path, [:read, :binary, :raw])
    size = File.stat!(path).size

    data =
      case :file.pread(file, offset, size - offset) do
        {:ok, data} -> data
        :eof -> ""
      end

    :ok = :file.close(file)
    types = Regex.scan(~r/ query\[(\w+)\] /, data, capture: :all_but_first)
    %{total: length(types), by_type: types |> List.flatten() |> Enum.frequencies()}
  end
end

defmodule Caravan.Bench.OsProcs do
  @moduledoc false
  # The pids of dnsmasq and epmd also go to $CARAVAN_BENCH_PIDFILE, so
  # bench/run can kill them if the bench VM itself dies.
  def record(os_pid) do
    case System.get_env("CARAVAN_BENCH_PIDFILE") do
      file when file in [nil, ""] -> :ok
      file -> File.write!(file, "#{os_pid}\n", [:append])
    end
  end

  @doc """
  Starts OTP's epmd on `port` (never 4369, the machine's own), listening
  on loopback and `ips`, in the foreground so the bench owns its OS pid;
  waits until it accepts connections. Returns `%{os_pid, port}`.
  """
  def start_epmd(port, ips) when port != 4369 do
    exe = System.find_executable("epmd") || raise "epmd not found"
    address = Enum.map_join([{127, 0, 0, 1} | ips], ",", &to_string(:inet.ntoa(&1)))

    os_port =
      Port.open({:spawn_executable, exe}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ["-port", "#{port}", "-address", address]
      ])

    {:os_pid, os_pid} = Port.info(os_port, :os_pid)
    record(os_pid)
    epmd = %{os_pid: os_pid, port: os_port}

    unless Enum.any?(1..50, fn _ -> accepts?(port) or Process.sleep(100) != :ok end) do
      stop_epmd(epmd)
      raise "epmd on port #{port} did not start"
    end

    epmd
  end

  defp accepts?(port) do
    case :gen_tcp.connect({127, 0, 0, 1}, port, [], 200) do
      {:ok, socket} -> :gen_tcp.close(socket) == :ok
      _ -> false
    end
  end

  @doc "Stops the bench's epmd by its OS pid and waits for it to exit. Returns :ok."
  def stop_epmd(%{os_pid: os_pid, port: os_port}) do
    System.cmd("kill", ["-TERM", "#{os_pid}"], stderr_to_stdout: true)

    receive do
      {^os_port, {:exit_status, _}} -> :ok
    after
      3_000 -> System.cmd("kill", ["-KILL", "#{os_pid}"], stderr_to_stdout: true)
    end

    :ok
  end
end

defmodule Caravan.Bench.Log do
  @moduledoc false
  # Progress on stderr, so stdout keeps only the tables.
  def say(text) do
    {ms, _} = :erlang.statistics(:wall_clock)
    IO.puts(:stderr, "[bench #{:erlang.float_to_binary(ms / 1000, decimals: 1)}s] " <> text)
  end
end
