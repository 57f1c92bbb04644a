defmodule Caravan.Test.DnatLab do
  @moduledoc """
  A lab of "client hosts" with "containers" behind them, as Nomad's bridge
  networking (or Docker's `-p`) makes them: each container is a network
  namespace behind its host's namespace, listens on 4370 inside, and its
  host forwards a host port of its own to it with DNAT. Built from the
  pieces of `Caravan.Test.Lab` (its bridge, host namespaces and cleanup).

      bridge ns     <prefix>b : bridge br0
      host ns       <prefix>h<i> : eth0 198.18.0.<10+i>/24, forwarding,
                    DNAT 198.18.0.<10+i>:<host port> -> 10.<i>.<j>.2:4370,
                    MASQUERADE for what leaves the containers
      container ns  <prefix>c<i><j> : eth0 10.<i>.<j>.2/24, default via the host
      dns ns        <prefix>d : the Consul stand-in on 198.18.0.2:53

  Two hosts, two containers each; container `{i, j}` gets host port
  `20000 + 10 * i + j`. The DNS (`Caravan.Test.ConsulDns`, service `app`)
  registers what Consul registers for a Nomad service with `port =
  "dist"`: the host's IP and the host port. Each container's node runs with
  `ERL_DIST_PORT=4370`, named by `mode`:

    * `:name` - the host port in the name: `app-<host port>@<host ip>`
      (SRV targets `<hex>.addr.dc1.consul`);
    * `:srv` - no port in the name: `app@c<i><j>.node.dc1.consul` (SRV
      targets `c<i><j>.node.dc1.consul`, whose A record is the host IP),
      ports from SRV.

  `stop/1` (from `on_exit`) stops the nodes and deletes the namespaces.
  Needs what `Caravan.Test.Lab.unavailable_reason/0` checks.
  """

  alias Caravan.Test.{BeamNode, ConsulDns, Lab}

  @cookie "caravan_lab_cookie"
  @dns_ip {198, 18, 0, 2}
  @inside 4370
  @query "_app._tcp.service.consul"

  defstruct [:prefix, :bridge_ns, :dns_ns, :dns_peer, :dns_server, :mode, containers: %{}]

  @doc "The SRV name the lab's DNS answers."
  def query, do: @query

  @doc "The nameserver string for Caravan options."
  def nameserver, do: "#{:inet.ntoa(@dns_ip)}:53"

  @doc "The containers' keys, `{host, container}`."
  def keys, do: for(i <- 1..2, j <- 1..2, do: {i, j})

  @doc "Host `i`'s address."
  def host_ip(i), do: {198, 18, 0, 10 + i}

  @doc """
  Builds the lab and starts a node in every container (no strategy yet)
  but those of `opts[:empty]` (keys; for a release the test starts there
  itself, see `in_container/2`).
  """
  def start(mode, opts \\ []) when mode in [:name, :srv] do
    Lab.remove_stale()
    prefix = "cvl#{Integer.to_string(String.to_integer(System.pid()), 36)}_" <> Lab.counter()
    lab = %__MODULE__{prefix: prefix, bridge_ns: prefix <> "b", dns_ns: prefix <> "d", mode: mode}

    Lab.ip!(["netns", "add", lab.bridge_ns])
    Lab.ns!(lab.bridge_ns, ["ip", "link", "set", "lo", "up"])
    Lab.ns!(lab.bridge_ns, ["ip", "link", "add", "br0", "type", "bridge"])
    Lab.ns!(lab.bridge_ns, ["ip", "link", "set", "br0", "up"])
    Lab.add_host_ns(lab, lab.dns_ns, "#{prefix}vd", @dns_ip)

    for i <- 1..2 do
      host = host_ns(lab, i)
      Lab.add_host_ns(lab, host, "#{prefix}v#{i}", host_ip(i))
      Lab.ns!(host, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])

      iptables(host, [
        "-A",
        "POSTROUTING",
        "-s",
        "10.#{i}.0.0/16",
        "-o",
        "eth0",
        "-j",
        "MASQUERADE"
      ])
    end

    containers =
      Map.new(keys(), fn {i, j} = key ->
        ns = "#{prefix}c#{i}#{j}"
        ip = {10, i, j, 2}
        Lab.ip!(["netns", "add", ns])
        Lab.ns!(ns, ["ip", "link", "set", "lo", "up"])
        link = ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "c#{j}"]
        Lab.ns!(ns, link ++ ["netns", host_ns(lab, i)])
        Lab.ns!(ns, ["ip", "addr", "add", "10.#{i}.#{j}.2/24", "dev", "eth0"])
        Lab.ns!(ns, ["ip", "link", "set", "eth0", "up"])
        Lab.ns!(host_ns(lab, i), ["ip", "addr", "add", "10.#{i}.#{j}.1/24", "dev", "c#{j}"])
        Lab.ns!(host_ns(lab, i), ["ip", "link", "set", "c#{j}", "up"])
        Lab.ns!(ns, ["ip", "route", "add", "default", "via", "10.#{i}.#{j}.1"])
        # Docker's hairpin rule: a container reaching itself through its host port.
        iptables(host_ns(lab, i), [
          "-A",
          "POSTROUTING",
          "-s",
          "10.#{i}.#{j}.2",
          "-d",
          "10.#{i}.#{j}.2",
          "-j",
          "MASQUERADE"
        ])

        container = %{ns: ns, ip: ip, host_port: 20_000 + 10 * i + j}
        dnat(lab, key, container.host_port, "-A")
        {key, container}
      end)

    lab = %{lab | containers: containers}
    lab = start_dns(lab)
    lab = Enum.reduce(keys() -- Keyword.get(opts, :empty, []), lab, &start_node(&2, &1))
    set_listed(lab, keys())
    lab
  end

  @doc "Stops every node and DNS, deletes every namespace of the lab."
  def stop(%__MODULE__{} = lab) do
    for {_key, c} <- lab.containers, c[:peer], do: BeamNode.stop(c.peer)
    if lab.dns_peer, do: BeamNode.stop(lab.dns_peer)

    namespaces =
      [lab.dns_ns, lab.bridge_ns, host_ns(lab, 1), host_ns(lab, 2)] ++
        for {_key, c} <- lab.containers, do: c.ns

    Enum.each(namespaces, &Lab.remove_namespace/1)
  end

  @doc "Container `key`'s node name."
  def node_of(%__MODULE__{} = lab, key), do: :"#{name_part(lab, key)}@#{host_part(lab, key)}"

  defp name_part(%{mode: :name} = lab, key), do: "app-#{lab.containers[key].host_port}"
  defp name_part(%{mode: :srv}, _key), do: "app"

  defp host_part(%{mode: :name}, {i, _j}), do: to_string(:inet.ntoa(host_ip(i)))
  defp host_part(%{mode: :srv}, {i, j}), do: "c#{i}#{j}.node.dc1.consul"

  @doc "Calls `m.f(a)` on container `key`'s node."
  def call(lab, key, m, f, a), do: BeamNode.call(lab.containers[key].peer, m, f, a)

  @doc "Starts the strategy on container `key`'s node: poll 1 s, `opts` on top."
  def start_strategy(lab, key, opts \\ []) do
    base = [query: @query, node_sname: "app", nameservers: [nameserver()], poll_interval: 1_000]
    base = if lab.mode == :srv, do: [node_port: :srv] ++ base, else: base
    {:ok, sup} = BeamNode.start_strategy(lab.containers[key].peer, Keyword.merge(base, opts))
    sup
  end

  @doc "True when every container of `keys` is connected to exactly the others."
  def mesh?(lab, keys) do
    Enum.all?(keys, fn key ->
      others = for k <- keys, k != key, do: node_of(lab, k)
      Enum.sort(call(lab, key, Node, :list, [])) == Enum.sort(others)
    end)
  end

  @doc "DNS registers exactly the containers `keys` (host IP, host port)."
  def set_listed(lab, keys) do
    instances =
      for {i, j} = key <- keys,
          do: %{node: "c#{i}#{j}", ip: host_ip(i), port: lab.containers[key].host_port}

    :ok = BeamNode.call(lab.dns_peer, ConsulDns, :set_instances, [lab.dns_server, instances])
  end

  @doc """
  Moves container `key` to `host_port`, as a rescheduled allocation: its
  node stops, the host forwards the new port instead of the old, and the
  node starts again with the same name (`:srv`) in the same container.
  DNS is left to the caller (`set_listed/2`).
  """
  def move(lab, key, host_port) do
    c = lab.containers[key]
    BeamNode.stop(c.peer)
    dnat(lab, key, c.host_port, "-D")
    dnat(lab, key, host_port, "-A")
    lab = put_in(lab.containers[key].host_port, host_port)
    start_node(lab, key)
  end

  @doc """
  Runs `erl` as a release helper node would (`rpc-<hex>-<node>`, hidden,
  Caravan's flags, `ERL_DIST_PORT=4370` in its environment as in the
  node's) inside container `key`, evaluating `expr` (Erlang). Returns
  `{output, exit_status}`.
  """
  def helper(lab, key, expr) do
    c = lab.containers[key]
    name = "rpc-1a2b-#{name_part(lab, key)}@#{host_part(lab, key)}"

    args =
      ["netns", "exec", c.ns, System.find_executable("erl"), "-noshell", "-hidden", "-name", name] ++
        BeamNode.erl_args(c.ip, cookie: @cookie) ++ ["-eval", expr]

    System.cmd("ip", args, env: env(lab), stderr_to_stdout: true)
  end

  @doc """
  The command line (a list) that runs `argv` inside container `key`, and
  the environment its node needs there (`ERL_DIST_PORT`,
  `CARAVAN_NAMESERVERS`, `CARAVAN_SRV_QUERY` in `:srv` mode) with
  `RELEASE_NODE` and the lab's cookie: `{argv, env}`.
  """
  def in_container(lab, key, argv) do
    env =
      env(lab) ++
        [
          {"RELEASE_DISTRIBUTION", "name"},
          {"RELEASE_NODE", to_string(node_of(lab, key))},
          {"RELEASE_COOKIE", @cookie}
        ]

    {["ip", "netns", "exec", lab.containers[key].ns | argv], env}
  end

  @doc "The `{ns, port}` of every TCP socket listening on `port` in any namespace of the lab."
  def listening(lab, port) do
    hex = port |> Integer.to_string(16) |> String.pad_leading(4, "0")

    namespaces =
      [lab.dns_ns, host_ns(lab, 1), host_ns(lab, 2)] ++ for({_k, c} <- lab.containers, do: c.ns)

    for ns <- namespaces,
        {out, 0} <- [
          System.cmd("ip", ["netns", "exec", ns, "cat", "/proc/net/tcp", "/proc/net/tcp6"])
        ],
        line <- String.split(out, "\n"),
        [_, local, _, "0A" | _] <- [String.split(line)],
        String.ends_with?(local, ":" <> hex),
        do: {ns, port}
  end

  # -- building ---------------------------------------------------------------

  defp host_ns(lab, i), do: "#{lab.prefix}h#{i}"

  defp iptables(ns, rule), do: Lab.ns!(ns, ["iptables", "-w", "-t", "nat" | rule])

  defp dnat(lab, {i, j}, host_port, op) do
    iptables(host_ns(lab, i), [
      op,
      "PREROUTING",
      "-d",
      to_string(:inet.ntoa(host_ip(i))),
      "-p",
      "tcp",
      "--dport",
      "#{host_port}",
      "-j",
      "DNAT",
      "--to-destination",
      "10.#{i}.#{j}.2:#{@inside}"
    ])
  end

  defp env(lab) do
    [{"ERL_DIST_PORT", "#{@inside}"}, {"CARAVAN_NAMESERVERS", nameserver()}] ++
      if lab.mode == :srv, do: [{"CARAVAN_SRV_QUERY", @query}], else: []
  end

  defp start_node(lab, key) do
    c = lab.containers[key]

    {:ok, peer, _node} =
      :peer.start(%{
        name: String.to_charlist(name_part(lab, key)),
        host: String.to_charlist(host_part(lab, key)),
        longnames: true,
        connection: :standard_io,
        exec: {to_charlist(System.find_executable("ip")), Lab.netns_exec(c.ns)},
        env: for({k, v} <- env(lab), do: {to_charlist(k), to_charlist(v)}),
        args: Enum.map(BeamNode.erl_args(c.ip, cookie: @cookie), &String.to_charlist/1),
        wait_boot: 60_000
      })

    put_in(lab.containers[key][:peer], peer)
  end

  defp start_dns(lab) do
    {:ok, peer, _node} =
      :peer.start(%{
        connection: :standard_io,
        exec: {to_charlist(System.find_executable("ip")), Lab.netns_exec(lab.dns_ns)},
        args: Enum.map(BeamNode.code_path_args(), &String.to_charlist/1),
        wait_boot: 60_000
      })

    target = if lab.mode == :name, do: :addr, else: :node
    {:ok, server} = BeamNode.call(peer, __MODULE__, :remote_start_dns, [@dns_ip, target])
    %{lab | dns_peer: peer, dns_server: server}
  end

  @doc false
  # Runs in the DNS namespace's BEAM: the server outlives the :peer.call.
  def remote_start_dns(ip, target) do
    parent = self()

    spawn(fn ->
      {:ok, server} =
        ConsulDns.start_link(ip: ip, port: 53, service: "app", target: target, instances: [])

      send(parent, {:dns, server})
      Process.sleep(:infinity)
    end)

    receive do
      {:dns, server} -> {:ok, server}
    after
      10_000 -> {:error, :timeout}
    end
  end
end
