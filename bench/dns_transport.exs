# Measures the DNS transport's figures (bench/README.md, "DNS transport").
# Run inside a network namespace:
#   unshare -n sh -c 'ip link set lo up && MIX_ENV=test mix run bench/dns_transport.exs'
# Prints: records seen per query form against the Consul stand-in (40, 500
# instances, .node. and .addr. targets); queries per lookup against dnsmasq
# when the answer fits UDP and when it does not; a lookup to a closed port;
# consecutive lookups that go over TCP (none may stall on a kept connection).
alias Caravan.Test.{ConsulDns, Dnsmasq}

get = fn ns, q -> Caravan.DnsClient.Native.get_nodes(q, nameservers: [ns], timeout: 2_000) end

ms = fn f ->
  {t, r} = :timer.tc(f)
  {div(t, 1000), r}
end

IO.puts("== Consul stand-in: records seen (of N)")

for n <- [40, 500], form <- [:node, :addr] do
  {:ok, s} = ConsulDns.start_link(port: 8650, ip: {127, 0, 3, 9}, instances: n, target: form)
  ns = ConsulDns.nameserver(s)

  for q <- ["web.service.consul", "_web._tcp.service.consul"] do
    seen =
      case get.(ns, q) do
        {:ok, peers} -> length(peers)
        other -> inspect(other)
      end

    IO.puts("  N=#{n} #{form} #{q}: #{seen} (queries #{inspect(ConsulDns.queries(s))})")
  end

  GenServer.stop(s)
end

IO.puts("== dnsmasq: queries per lookup")

for n <- [8, 64] do
  srv = for i <- 1..n, do: {"_web._tcp.service.consul", "n#{i}.node.dc1.consul", 20_000 + i}
  hosts = for i <- 1..n, do: {"n#{i}.node.dc1.consul", "10.0.0.#{i}"}
  d = Dnsmasq.start(port: 8651, srv: srv, hosts: hosts, extra: ["--log-queries=extra"])
  ns = Dnsmasq.nameserver(d)

  drain = fn drain, acc ->
    receive do
      {port, {:data, text}} when port == d.port -> drain.(drain, acc <> text)
    after
      300 -> acc
    end
  end

  _ = drain.(drain, "")
  for _ <- 1..10, do: {:ok, _} = get.(ns, "_web._tcp.service.consul")
  text = drain.(drain, "")
  {:ok, [r | _]} = Caravan.DNS.lookup_srv("_web._tcp.service.consul", nameservers: [ns])
  IO.puts("  N=#{n}: answered over #{r.transport}")
  queries = length(Regex.scan(~r/query\[SRV\]/, text))
  times = for _ <- 1..20, do: elem(ms.(fn -> get.(ns, "_web._tcp.service.consul") end), 0)

  IO.puts(
    "  N=#{n}: #{queries / 10} SRV queries per lookup (dnsmasq's query log); 20 more lookups ms: max #{Enum.max(times)}, #{inspect(times)}"
  )

  paced =
    for _ <- 1..5,
        do:
          (
            Process.sleep(1_000)
            elem(ms.(fn -> get.(ns, "_web._tcp.service.consul") end), 0)
          )

  IO.puts("         5 lookups 1 s apart, ms: #{inspect(paced)}")
  Dnsmasq.stop(d)
end

IO.puts("== closed nameserver port")

for _ <- 1..3 do
  {t, r} = ms.(fn -> get.("127.0.3.10:8652", "web.service.consul") end)
  IO.puts("  #{t} ms: #{inspect(r)}")
end

IO.puts(
  "== 64 lookups at once (64 nodes polling together), dnsmasq with 64 records (TCP), 5 rounds"
)

big = for i <- 1..64, do: {"_big._tcp.service.consul", "b#{i}.node.dc1.consul", 21_000 + i}
d = Dnsmasq.start(port: 8653, srv: big)
ns = Dnsmasq.nameserver(d)

for round <- 1..5 do
  results =
    1..64
    |> Task.async_stream(
      fn _ ->
        ms.(fn -> Caravan.DNS.lookup_srv("_big._tcp.service.consul", nameservers: [ns]) end)
      end,
      max_concurrency: 64,
      timeout: 10_000
    )
    |> Enum.map(fn {:ok, r} -> r end)

  ok = Enum.count(results, fn {_, r} -> match?({:ok, l} when length(l) == 64, r) end)
  times = results |> Enum.map(&elem(&1, 0)) |> Enum.sort()

  IO.puts(
    "  round #{round}: #{ok}/64 complete; ms p50 #{Enum.at(times, 32)} p90 #{Enum.at(times, 57)} max #{List.last(times)}; over 900 ms: #{Enum.count(times, &(&1 > 900))}"
  )

  Process.sleep(1_000)
end

Dnsmasq.stop(d)
