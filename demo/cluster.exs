# The main job, for a person to watch: a real dnsmasq serves Consul-shaped SRV
# records, three BEAM nodes start as separate OS processes on 127.0.0.2..4
# (all on distribution port 4370, no epmd daemon), and Caravan's strategy on
# each finds the others and connects. Everything is stopped at the end.
#
# Run: ./script/demo   (or MIX_ENV=test mix run demo/cluster.exs)

alias Caravan.Test.{BeamNode, Dnsmasq}

say = fn text -> IO.puts(IO.ANSI.format([:bright, "==> ", :reset, text])) end

hosts = [
  {"web1.node.dc1.consul", {127, 0, 0, 2}},
  {"web2.node.dc1.consul", {127, 0, 0, 3}},
  {"web3.node.dc1.consul", {127, 0, 0, 4}}
]

say.("starting dnsmasq on 127.0.0.1:8600 with SRV records for _app._tcp.service.consul")

dns =
  Dnsmasq.start(
    port: 8600,
    srv: for({host, _} <- hosts, do: {"_app._tcp.service.consul", host, 4370}),
    hosts: for({host, ip} <- hosts, do: {host, ip |> :inet.ntoa() |> to_string()})
  )

# Peers' .consul host names resolve through Caravan's resolver
# (-caravan_nameservers). This inetrc only turns every OS lookup off, so the
# demo asks nothing outside this machine and shows no OS setup is needed.
inetrc = Path.join(System.tmp_dir!(), "caravan_demo_inetrc")
File.write!(inetrc, ~s({resolv_conf, ""}.\n{hosts_file, ""}.\n{lookup, [file]}.\n))

{:ok, records} =
  Caravan.DNS.lookup_srv("_app._tcp.service.consul", nameservers: [Dnsmasq.nameserver(dns)])

for r <- Enum.sort_by(records, & &1.target) do
  IO.puts("    SRV #{r.priority} #{r.weight} #{r.port} #{r.target}")
end

epmd = if BeamNode.listening?({127, 0, 0, 1}, 4369), do: "something!", else: "nothing"
say.("port 4369 (epmd) on 127.0.0.1: #{epmd} listening")

nodes =
  for {{host, ip}, i} <- Enum.with_index(hosts) do
    flags =
      if(i == 0, do: "-proto_dist Elixir.Caravan.Epmd.Dist ", else: "") <>
        "-start_epmd false -epmd_module Elixir.Caravan.Epmd.Client " <>
        "-caravan_nameservers #{Dnsmasq.nameserver(dns)}"

    say.("starting app-4370@#{host} on #{:inet.ntoa(ip)}:4370 with #{flags}")

    {peer, node} =
      BeamNode.start("app-4370", host, ip,
        proto_dist: i == 0,
        inetrc: inetrc,
        args: ["-caravan_nameservers", Dnsmasq.nameserver(dns)]
      )

    {peer, node}
  end

say.("starting Caravan.Cluster.DnsStrategy on every node (poll_interval 1000 ms)")

for {peer, _} <- nodes do
  {:ok, _} =
    BeamNode.start_strategy(
      peer,
      [
        query: "_app._tcp.service.consul",
        node_sname: "app",
        nameservers: [Dnsmasq.nameserver(dns)],
        poll_interval: 1_000
      ],
      :info
    )
end

ok = BeamNode.eventually(fn -> BeamNode.full_mesh?(nodes) end, 30_000)
Process.sleep(200)

say.("cluster view from each node:")

for {peer, node} <- nodes do
  IO.puts("    #{node} sees #{inspect(Enum.sort(BeamNode.call(peer, Node, :list, [])))}")
end

epmd =
  if Enum.any?([{127, 0, 0, 1} | Enum.map(hosts, &elem(&1, 1))], &BeamNode.listening?(&1, 4369)),
    do: "something!",
    else: "nothing"

say.("port 4369 (epmd) on 127.0.0.1..4: #{epmd} listening")
say.(if ok, do: "full mesh formed: 3 nodes, no epmd", else: "FAILED: no full mesh within 30 s")

say.("stopping the nodes and dnsmasq")
Enum.each(nodes, fn {peer, _} -> BeamNode.stop(peer) end)
Dnsmasq.stop(dns)
if ok, do: System.halt(0), else: System.halt(1)
