# The micro rows (SRV lookup latency and lookups in flight against
# :inet_res and an open-socket floor, the port rule against an Elixir byte
# scan, a first connect against OTP's epmd; bench/micro.exs), then cluster
# formation: Caravan against libcluster's DNSPoll (as
# Caravan.Bench.DnsPollLike) and two floors with no DNS, side by side in one
# interleaved run on one machine. Prints ratio tables (shared machines are
# noisy; ratios within one run are what holds) and writes them as markdown.
#
#   ./bench/run                  # N = 8, 16, 32, 48, 64, join of 16 + 1; 3 repetitions
#   ./bench/run --quick          # N = 4, join of 4 + 1, 1 repetition, fewer samples (CI)
#   ./bench/run --sizes 8,32 --reps 5 --out /tmp/t.md
#
# Addresses: dnsmasq on 127.0.1.1-4:8700, formation nodes on 127.0.2.1..
# port 4370, first-connect nodes on 127.0.4.1-3 and 127.0.5.1-3, epmd on
# port 4469. Run it inside its own network namespace (unshare -n, see
# bench/README.md#how-to-run-it).

bench_dir = __DIR__
# CI compiles the bench by running it: a warning is an error here too.
Code.put_compiler_option(:warnings_as_errors, true)
# Caravan.DNS traces a lookup whenever Logger would print debug entries;
# the bench VM's lookups run untraced, as on a production node.
Logger.configure(level: :warning)
Code.require_file("support.exs", bench_dir)
Caravan.Bench.Peers.compile_peer_modules(Path.join(bench_dir, "peer_side.exs"))
Code.require_file("formation.exs", bench_dir)
Code.require_file("micro.exs", bench_dir)

alias Caravan.Bench.{Formation, Log, Micro, OsProcs, Peers, Stats, Table}
alias Caravan.Test.Dnsmasq

{opts, _} =
  OptionParser.parse!(System.argv(),
    strict: [quick: :boolean, out: :string, sizes: :string, reps: :integer, micro: :string]
  )

quick = Keyword.get(opts, :quick, false)

sizes =
  case opts[:sizes] do
    nil -> if quick, do: [4], else: [8, 16, 32, 48, 64]
    text -> text |> String.split(",", trim: true) |> Enum.map(&String.to_integer/1)
  end

reps = Keyword.get(opts, :reps, if(quick, do: 1, else: 3))
join_formed = if quick, do: 4, else: 16
# How long the server-cost table's lookups run, per N and system.
cost_ms = if quick, do: 300, else: 1_500
rest_ms = if quick, do: 1_000, else: 3_000
out = opts[:out] || Path.join([bench_dir, "results", if(quick, do: "quick.md", else: "full.md")])
systems = Formation.systems()
started = System.monotonic_time(:millisecond)

# --micro srv,in_flight: only those micro rows, printed with their checks,
# no formation (for comparing lookup-path changes quickly).
if parts = opts[:micro] do
  parts = parts |> String.split(",", trim: true) |> Enum.map(&String.to_existing_atom/1)
  micro = Micro.run(quick, parts)
  tables = for part <- parts, do: Table.text(micro[part])
  IO.puts(Enum.join(tables ++ micro.notes ++ Micro.check_lines(micro.figures), "\n\n"))
  System.halt(0)
end

micro = Micro.run(quick)

records = Formation.dns_records(sizes ++ [join_formed + 1], reps)

# One dnsmasq per DNS-using system, both with dnsmasq's default limits (20
# TCP connections, 150 concurrent forwards): what one system does to its
# server (e.g. holding TCP connections open) does not slow the other.
servers =
  for {system, ip} <- [caravan: "127.0.1.1", dns_poll: "127.0.1.2"], into: %{} do
    log = Path.join(System.tmp_dir!(), "caravan-bench-#{system}-#{System.os_time()}.log")
    File.write!(log, "")

    dns =
      Dnsmasq.start(
        listen: ip,
        port: 8700,
        srv: records[:srv],
        hosts: records[:hosts],
        log_facility: log,
        extra: ["--log-queries"]
      )

    OsProcs.record(dns.os_pid)
    {system, %{dns: dns, log: log, nameserver: "#{ip}:8700"}}
  end

inetrc =
  Dnsmasq.inetrc(servers.dns_poll.dns, Path.join(System.tmp_dir!(), "caravan-bench-inetrc"))

ctx = %{servers: servers}
count = max(Enum.max(sizes), join_formed + 1)
Log.say("booting #{count} nodes")

nodes =
  Peers.start_many(Enum.map(1..count, &Formation.ip/1),
    inetrc: inetrc,
    nameserver: servers.caravan.nameserver
  )

indexed = Enum.with_index(nodes, 1)

{formation, join, server_costs} =
  try do
    formation =
      for n <- sizes, into: %{} do
        members = Enum.take(indexed, n)

        rounds =
          for rep <- 1..reps,
              system <- if(rem(rep, 2) == 1, do: systems, else: Enum.reverse(systems)) do
            ctx = Map.put(ctx, :rep, rep)
            result = Formation.formation(members, system, ctx, if(rep == 1, do: rest_ms, else: 0))
            Formation.say("N=#{n} rep #{rep}", system, result)
            {system, result}
          end

        {n, Enum.group_by(rounds, &elem(&1, 0), &elem(&1, 1))}
      end

    {formed, [joiner | _]} = Enum.split(indexed, join_formed)

    # floor_lower cannot join (the formed nodes never dial again).
    join_systems = systems -- [:floor_lower]

    join =
      for rep <- 1..reps,
          system <- if(rem(rep, 2) == 1, do: join_systems, else: Enum.reverse(join_systems)),
          reduce: %{} do
        acc ->
          ms = Formation.join(formed, joiner, system, Map.put(ctx, :rep, rep))
          Formation.say("join #{join_formed}+1 rep #{rep}", system, ms)
          Map.update(acc, system, [ms], &[ms | &1])
      end

    # What one node's first lookup costs each DNS server, on a calm
    # machine (Formation.server_cost/4).
    server_costs =
      for n <- sizes, s <- [:caravan, :dns_poll], into: %{} do
        {{n, s}, Formation.server_cost(ctx, s, n, cost_ms)}
      end

    {formation, join, server_costs}
  after
    Peers.each(nodes, &Peers.stop/1)
    for {_, server} <- servers, do: Dnsmasq.stop(server.dns) && File.rm(server.log)
    File.rm(inetrc)
  end

med = fn n, system, key -> formation[n][system] |> Enum.map(& &1[key]) |> Stats.median() end
worst = fn n, system, key -> formation[n][system] |> Enum.map(& &1[key]) |> Enum.max() end
# Numbers compare below atoms: a :timeout median fails every "at most" check.
rest = fn n, system -> formation[n][system] |> Enum.map(& &1.rest_qpp) |> Enum.find(& &1) end
f = &Stats.fmt/1

formation_rows = [
  ~w(N floor_par floor_seq Caravan DNSPoll-like Caravan/floor_par DNSPoll-like/Caravan floor_lower)
  | for n <- sizes do
      [c, d, fp, fs, fl] = for s <- systems, do: med.(n, s, :ms)

      [to_string(n), f.(fp), f.(fs), f.(c), f.(d), Stats.ratio(c, fp), Stats.ratio(d, c)] ++
        ["#{f.(fl)} (#{Stats.ratio(fl, fp)})"]
    end
]

cost_rows = [
  [
    "N",
    "CPU-s Caravan",
    "CPU-s DNSPoll-like",
    "CPU-s floor_par",
    "queries Caravan",
    "queries DNSPoll-like",
    "at rest Caravan",
    "at rest DNSPoll-like",
    "worst lookup Caravan",
    "worst lookup DNSPoll-like"
  ]
  | for n <- sizes do
      [
        to_string(n),
        f.(med.(n, :caravan, :cpu_s)),
        f.(med.(n, :dns_poll, :cpu_s)),
        f.(med.(n, :floor_par, :cpu_s)),
        f.(med.(n, :caravan, :queries)),
        f.(med.(n, :dns_poll, :queries)),
        f.(rest.(n, :caravan)),
        f.(rest.(n, :dns_poll)),
        f.(worst.(n, :caravan, :lookup_ms)),
        f.(worst.(n, :dns_poll, :lookup_ms))
      ]
    end
]

first_rows = [
  [
    "N",
    "starts Caravan",
    "starts DNSPoll-like",
    "takes Caravan",
    "takes DNSPoll-like"
  ]
  | for n <- sizes do
      [
        to_string(n),
        f.(med.(n, :caravan, :first_start_ms)),
        f.(med.(n, :dns_poll, :first_start_ms)),
        f.(med.(n, :caravan, :first_lookup_ms)),
        f.(med.(n, :dns_poll, :first_lookup_ms))
      ]
    end
]

server_rows = [
  [
    "N",
    "server CPU Caravan",
    "server CPU DNSPoll-like",
    "wall Caravan",
    "wall DNSPoll-like"
  ]
  | for n <- sizes do
      [c, d] = for s <- [:caravan, :dns_poll], do: server_costs[{n, s}]
      [to_string(n), f.(c.cpu_us), f.(d.cpu_us), f.(c.wall_us), f.(d.wall_us)]
    end
]

[jc, jd, jfp, jfs] = for s <- systems -- [:floor_lower], do: Stats.median(join[s])
join_bound = if is_number(jfp), do: Formation.poll_interval() + 2 * jfp

join_rows = [
  ~w(cluster floor_par floor_seq Caravan DNSPoll-like bound Caravan/floor_par),
  [
    "#{join_formed} + 1",
    f.(jfp),
    f.(jfs),
    f.(jc),
    f.(jd),
    f.(join_bound),
    Stats.ratio(jc, jfp)
  ]
]

big = Enum.filter(sizes, &(&1 >= 32))
# true when both are numbers and a <= b (a timeout meets no bound).
le = fn a, b -> is_number(a) and is_number(b) and a <= b end
scale = fn x, k -> if is_number(x), do: k * x end

within_floor? = &le.(med.(&1, :caravan, :ms), scale.(med.(&1, :floor_par, :ms), 1.3))
ahead? = &le.(scale.(med.(&1, :caravan, :ms), 1.15), med.(&1, :dns_poll, :ms))
# The sizes a check missed, for its line.
missed = fn ns, ok? ->
  case Enum.reject(ns, ok?) do
    [] -> ""
    short -> "; not at N=#{Enum.join(short, ", ")}"
  end
end

checks = [
  {"forms within 1.3x floor_par from N=32 (#{if big == [], do: "not run", else: "N=#{Enum.join(big, ", ")}#{missed.(big, within_floor?)}"})",
   big != [] and Enum.all?(big, within_floor?)},
  {"DNSPoll-like/Caravan at least 1.15x at every N#{missed.(sizes, ahead?)}",
   Enum.all?(sizes, ahead?)},
  {"join seen by all within poll + 2x floor_par (#{f.(join_bound)} ms)", le.(jc, join_bound)},
  {"one DNS query per node per poll at rest (<= 1.05)",
   Enum.all?(sizes, &le.(rest.(&1, :caravan), 1.05))}
]

check_lines =
  Micro.check_lines(micro.figures) ++
    for {text, ok} <- checks, do: "#{if ok, do: "met    ", else: "NOT met"}  #{text}"

rounds_lines =
  for n <- sizes, s <- systems do
    "N=#{n} #{s}: #{formation[n][s] |> Enum.map(&f.(&1.ms)) |> Enum.join(", ")} ms"
  end ++
    for(
      s <- systems -- [:floor_lower],
      do: "join #{s}: #{join[s] |> Enum.reverse() |> Enum.map_join(", ", f)} ms"
    )

cpu =
  File.read!("/proc/cpuinfo") |> then(&Regex.run(~r/model name\s*:\s*(.+)/, &1)) |> List.last()

{load, _} = System.cmd("cat", ["/proc/loadavg"])

header =
  "Caravan bench, #{if quick, do: "--quick", else: "full"} run, " <>
    "#{DateTime.utc_now() |> DateTime.truncate(:second)}, " <>
    "#{div(System.monotonic_time(:millisecond) - started, 1000)} s wall time; " <>
    "#{:erlang.system_info(:logical_processors)} logical CPUs (#{cpu}), load #{String.trim(load)}, " <>
    "OTP #{System.otp_release()}, Elixir #{System.version()}; formation: medians of #{reps} interleaved repetitions"

micro_notes = if micro.notes == [], do: "", else: "\n\n" <> Enum.join(micro.notes, "\n")

text = """
#{header}

Micro rows (ratios: Caravan's figure over the other's, in the row's unit; interleaved samples)
#{Table.text(micro.srv)}

#{Table.text(micro.in_flight)}

#{Table.text(micro.dist_port)}

#{Table.text(micro.connect)}#{micro_notes}

Formation: ms from t0 until every node sees N-1 peers (poll interval #{Formation.poll_interval()} ms;
timeout: no full mesh within #{Formation.deadline_ms()} ms)
#{Table.text(formation_rows)}

Costs during formation (CPU-s: all nodes' user+system CPU; queries: logged by dnsmasq, UDP and TCP)
and DNS queries per node per poll at rest; worst discovery lookup of the rounds, ms
#{Table.text(cost_rows)}

First discovery lookup of a round, the median node's: ms after t0 it starts, ms it takes
(medians over the rounds)
#{Table.text(first_rows)}

One node's first lookup on a calm machine: the DNS server's CPU, µs (dnsmasq and the
children it forks for TCP connections; 10 ms ticks over #{cost_ms / 1000} s of
lookups), and its wall time, µs
#{Table.text(server_rows)}

Join: ms from the joiner's start until all #{join_formed + 1} see each other
#{Table.text(join_rows)}

#{Enum.join(check_lines, "\n")}

Rounds:
#{Enum.join(rounds_lines, "\n")}
"""

IO.puts(text)

markdown = """
#{header}

SRV lookup, µs, p50 and p99 of interleaved lookups (ratios: Caravan's figure over the other's):

#{Table.markdown(micro.srv)}

Lookups in flight, lookups/s:

#{Table.markdown(micro.in_flight)}

The port rule, ns per call:

#{Table.markdown(micro.dist_port)}

First connect, µs:

#{Table.markdown(micro.connect)}#{Enum.map_join(micro.notes, "", &("\n\n- " <> &1))}

Formation, ms (poll interval #{Formation.poll_interval()} ms):

#{Table.markdown(formation_rows)}

Costs during formation; DNS queries per node per poll at rest; worst discovery lookup, ms:

#{Table.markdown(cost_rows)}

First discovery lookup of a round, the median node's: ms after t0 it starts, ms it takes:

#{Table.markdown(first_rows)}

One node's first lookup on a calm machine: the DNS server's CPU (dnsmasq and the children it forks for TCP connections), µs, and its wall time, µs:

#{Table.markdown(server_rows)}

Join, ms:

#{Table.markdown(join_rows)}

#{Enum.map_join(check_lines, "\n", &("    " <> &1))}

Rounds:

#{Enum.map_join(rounds_lines, "\n", &("- " <> &1))}
"""

File.mkdir_p!(Path.dirname(out))
File.write!(out, markdown)
IO.puts("wrote #{out}")
