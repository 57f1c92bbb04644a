# Caravan against what users would pick instead, side by side, in one run on
# one machine. Prints ratios (these machines are noisy; ratios within one run
# are what holds) and writes the table as markdown.
#
#   ./bench/run            # everything (under 10 minutes on 2 cores)
#   ./bench/run --quick    # a smaller version of every row (under a minute)
#   ./bench/run --only 1,2 --out /tmp/table.md
#
# Loopback 127.0.1.x, DNS port 8700, distribution port 4700, epmd (row 3
# only, started and killed by the bench) on port 4469, never 4369.

bench_dir = __DIR__

Code.require_file("support.exs", bench_dir)
# The code that runs on the nodes first: the rows call it locally too.
Caravan.Bench.Peers.compile_peer_modules(Path.join(bench_dir, "peer_side.exs"))

for file <- ~w(port_from_name.exs srv_lookup.exs connect.exs formation.exs footprint.exs) do
  Code.require_file(file, bench_dir)
end

alias Caravan.Bench.{Log, Table}
alias Caravan.Test.Dnsmasq

{opts, _rest} =
  OptionParser.parse!(System.argv(), strict: [quick: :boolean, out: :string, only: :string])

quick = Keyword.get(opts, :quick, false)

only =
  opts[:only] |> to_string() |> String.split(",", trim: true) |> Enum.map(&String.to_integer/1)

run? = fn group -> only == [] or group in only end

out =
  Keyword.get_lazy(opts, :out, fn ->
    Path.join([bench_dir, "results", if(quick, do: "quick.md", else: "full.md")])
  end)

started = System.monotonic_time(:millisecond)

# One dnsmasq serves every row: SRV sets of 3, 50 and 500 records (row 2 and
# the footprint row) and the formation services with A records (row 4).
dns_ip = {127, 0, 1, 1}
dns_port = 8700
formation_sizes = if quick, do: [4], else: [8, 16]

dns =
  Dnsmasq.start(
    listen: "127.0.1.1",
    port: dns_port,
    srv:
      Caravan.Bench.SrvLookup.srv_records() ++
        Caravan.Bench.Formation.srv_records(formation_sizes),
    hosts: Caravan.Bench.Formation.host_records(formation_sizes)
  )

Caravan.Bench.OsProcs.record(dns.os_pid)

ctx = %{
  quick: quick,
  ns: {dns_ip, dns_port},
  dns: dns,
  formation_sizes: formation_sizes,
  tmp: System.tmp_dir!()
}

sections = [
  {1, "port from name", &Caravan.Bench.PortFromName.run/1},
  {2, "SRV lookup", &Caravan.Bench.SrvLookup.run/1},
  {3, "connection setup", &Caravan.Bench.Connect.run/1},
  {4, "cluster formation", &Caravan.Bench.Formation.run/1},
  {5, "scheduler hygiene and footprint", &Caravan.Bench.Footprint.run/1}
]

{rows, failures} =
  try do
    for {group, title, fun} <- sections, run?.(group), reduce: {[], []} do
      {rows, failures} ->
        t0 = System.monotonic_time(:millisecond)
        Log.say("== #{group}. #{title}")

        try do
          new = fun.(ctx)
          Log.say("   #{title}: #{System.monotonic_time(:millisecond) - t0} ms")
          {rows ++ new, failures}
        rescue
          e ->
            message = Exception.format(:error, e, __STACKTRACE__)
            Log.say("   #{title} FAILED:\n" <> message)
            {rows, failures ++ [{group, title, Exception.message(e)}]}
        end
    end
  after
    Dnsmasq.stop(dns)
  end

wall_s = (System.monotonic_time(:millisecond) - started) / 1000

cpu =
  case File.read("/proc/cpuinfo") do
    {:ok, text} ->
      Regex.run(~r/model name\s*:\s*(.+)/, text, capture: :all_but_first)
      |> List.wrap()
      |> List.first()

    _ ->
      nil
  end

machine =
  "#{System.schedulers_online()} schedulers online, #{:erlang.system_info(:logical_processors)} logical CPUs" <>
    "#{if cpu, do: " (#{cpu})", else: ""}, OTP #{System.otp_release()} (erts #{:erlang.system_info(:version)}), Elixir #{System.version()}"

mode = if quick, do: "--quick", else: "full"

header =
  "Caravan bench, #{mode} run, #{DateTime.utc_now() |> DateTime.truncate(:second)}, " <>
    "#{:erlang.float_to_binary(wall_s, decimals: 0)} s wall time\n#{machine}"

notes = Table.notes(rows)

failure_lines = for {g, t, m} <- failures, do: "row #{g} (#{t}) FAILED: #{m}"

IO.puts("\n" <> header <> "\n\n" <> Table.text(rows))
if notes != [], do: IO.puts("\n" <> Enum.map_join(notes, "\n", &("  * " <> &1)))
if failure_lines != [], do: IO.puts("\n" <> Enum.join(failure_lines, "\n"))

markdown = """
#{String.replace(header, "\n", "  \n")}

#{Table.markdown(rows)}
#{if notes != [], do: "\n" <> Enum.map_join(notes, "\n", &("- " <> &1)) <> "\n", else: ""}#{if failure_lines != [], do: "\n" <> Enum.map_join(failure_lines, "\n", &("- " <> &1)) <> "\n", else: ""}
"vs alt": how many times better than the alternative (> 1: Caravan wins; for
rates Caravan/alt, for costs alt/Caravan). "x floor": Caravan's cost in
floors (1: as cheap as the floor).
"""

File.mkdir_p!(Path.dirname(out))
File.write!(out, markdown)
IO.puts("\nwrote #{out}")

if failures != [], do: System.halt(1)
