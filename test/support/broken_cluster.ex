defmodule Caravan.Test.BrokenCluster do
  @moduledoc """
  The cluster the diagnosis tests read (`Caravan.DiagnoseTest`,
  `Caravan.Cluster.StrategyDiagnosticsTest`): real nodes with Caravan's
  epmd flags and a real dnsmasq on 127.0.0.1:8600 whose services each carry
  one mistake.

  Hosts (127.0.0.x) and services:

    * web1 (.2) and web2 (.3) run `app-4370` nodes: `_app` lists both,
      `_solo` only web1;
    * web3 (.4) is listed (`_broken`, `_dead`) but nothing runs there;
    * web4 is listed (`_broken`) but has no A record;
    * web5 (.6) runs a node with another cookie (`_broken`);
    * web6 (.7) is a "firewall" that drops SYNs (a listener whose accept
      queue is full, `_fw`);
    * web7 (.8) runs a node named without a port, `app@web7...` (`_noport`);
    * web9 (.10) runs a node without `CARAVAN_NAMESERVERS`, so `.consul`
      hosts go to the OS resolver.
  """

  import ExUnit.Callbacks, only: [on_exit: 1]

  alias Caravan.Test.{BeamNode, Dnsmasq}

  @hosts [
    {"web1.node.dc1.consul", "127.0.0.2"},
    {"web2.node.dc1.consul", "127.0.0.3"},
    {"web3.node.dc1.consul", "127.0.0.4"},
    {"web5.node.dc1.consul", "127.0.0.6"},
    {"web6.node.dc1.consul", "127.0.0.7"},
    {"web7.node.dc1.consul", "127.0.0.8"}
  ]

  @srv [
    {"_app._tcp.service.consul", "web1.node.dc1.consul", 4370},
    {"_app._tcp.service.consul", "web2.node.dc1.consul", 4370},
    {"_solo._tcp.service.consul", "web1.node.dc1.consul", 4370},
    {"_broken._tcp.service.consul", "web1.node.dc1.consul", 4370},
    {"_broken._tcp.service.consul", "web3.node.dc1.consul", 4370},
    {"_broken._tcp.service.consul", "web4.node.dc1.consul", 4370},
    {"_broken._tcp.service.consul", "web5.node.dc1.consul", 4370},
    {"_dead._tcp.service.consul", "web3.node.dc1.consul", 4370},
    {"_noport._tcp.service.consul", "web7.node.dc1.consul", 4370},
    {"_fw._tcp.service.consul", "web6.node.dc1.consul", 4370}
  ]

  @typedoc "A started node: `{peer_pid, node_name}`."
  @type member :: {pid(), node()}

  @doc """
  Starts the DNS server, the dropping listener and the nodes, each stopped
  by `on_exit/1` (call it from `setup_all` or `setup`). Options:

    * `:other_cookie` (string, required): web5's cookie;
    * `:web2` (boolean, default false): also start web2's node;
    * `:on_node` (`fun(member) -> any`, default none): run on each node
      once it is up, e.g. to start a log recorder there.

  Returns `%{ns: "IP:PORT", n1: member, n2: member | nil, n7: member, bare: member}`.
  """
  @spec start(keyword()) :: %{
          ns: String.t(),
          n1: member(),
          n2: member() | nil,
          n7: member(),
          bare: member()
        }
  def start(opts) do
    other_cookie = Keyword.fetch!(opts, :other_cookie)
    on_node = Keyword.get(opts, :on_node, fn _member -> :ok end)
    dns = Dnsmasq.start(port: 8600, srv: @srv, hosts: @hosts)
    on_exit(fn -> Dnsmasq.stop(dns) end)
    dropping_listener({127, 0, 0, 7}, 4370)
    ns = Dnsmasq.nameserver(dns)
    env = [env: [{"CARAVAN_NAMESERVERS", ns}]]

    start = fn name, host, ip, node_opts ->
      {peer, node} = BeamNode.start(name, host, ip, node_opts)
      on_exit(fn -> BeamNode.stop(peer) end)
      on_node.({peer, node})
      {peer, node}
    end

    n1 = start.("app-4370", "web1.node.dc1.consul", {127, 0, 0, 2}, env)

    n2 =
      if Keyword.get(opts, :web2, false),
        do: start.("app-4370", "web2.node.dc1.consul", {127, 0, 0, 3}, env)

    _n5 =
      start.("app-4370", "web5.node.dc1.consul", {127, 0, 0, 6}, env ++ [cookie: other_cookie])

    n7 = start.("app", "web7.node.dc1.consul", {127, 0, 0, 8}, env)
    bare = start.("app-4370", "web9.node.dc1.consul", {127, 0, 0, 10}, [])
    %{ns: ns, n1: n1, n2: n2, n7: n7, bare: bare}
  end

  # Stands in for a firewall that drops packets: a listener with a zero
  # backlog whose one queued connection is never accepted, so Linux drops
  # further SYNs and connects time out (no iptables rule touches the host).
  # The calling process owns it, so it lives as long as the tests.
  defp dropping_listener(ip, port) do
    {:ok, listener} = :gen_tcp.listen(port, ip: ip, backlog: 0, active: false)
    {:ok, _filler} = :gen_tcp.connect(ip, port, [], 1_000)
    {:error, :timeout} = :gen_tcp.connect(ip, port, [], 300)
    listener
  end
end
