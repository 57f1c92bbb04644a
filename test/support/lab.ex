defmodule Caravan.Test.Lab do
  @moduledoc """
  A multi-host lab on one machine: each host is a network namespace with
  its own BEAM node (Caravan's real flags, no epmd), joined by a bridge
  that lives in a namespace of its own; the DNS server
  (`Caravan.Test.FaultDns`, records and faults switchable while it runs)
  runs in another namespace, in a BEAM of its own.

      bridge ns   <prefix>b : bridge br0, one veth end per host
      host ns     <prefix>h<i> : eth0 198.18.0.<10+i>/24, node app-4370@198.18.0.<10+i>
      dns ns      <prefix>d : eth0 198.18.0.2/24, DNS on 198.18.0.2:53

  Addresses are in 198.18.0.0/24 (RFC 2544's benchmark range) and exist
  only inside the lab: no namespace has a default route, nothing is
  created in the namespace the test runs in, and every fault (iptables)
  is applied inside a host namespace. Names start with `cvl`, the test
  runner's OS pid (base 36), `_` and a counter, so two runs never collide;
  `start/2` first removes labs whose runner is gone (killed before its
  `on_exit` ran).

  Every node runs `Caravan.Test.Lab.Probe`, which records each
  nodeup/nodedown it sees with its reason (`:net_kernel.monitor_nodes/2`
  with `nodedown_reason`) and every `[caravan]` log line, so a test can
  count collateral nodedowns. `stop/1` (call it from `on_exit`) stops the
  nodes, kills whatever still runs in the lab's namespaces and deletes
  them, also when a test failed.

  Needs root, iproute2 and iptables (`unavailable_reason/0` says what is
  missing, for a clear skip).
  """

  alias Caravan.Test.BeamNode

  @cookie "caravan_lab_cookie"
  @dns_ip {198, 18, 0, 2}
  @dns_port 53
  @query "_app._tcp.service.consul"

  defstruct [:prefix, :bridge_ns, :dns_ns, :dns_peer, :dns_server, hosts: %{}]

  @type host :: pos_integer()
  @type t :: %__MODULE__{}

  @doc "The SRV name the lab's DNS answers."
  def query, do: @query

  @doc "The nameserver string for Caravan options."
  def nameserver, do: "#{:inet.ntoa(@dns_ip)}:#{@dns_port}"

  @doc """
  `nil` when the lab can run here, else why not (a sentence naming what
  is missing and the fix).
  """
  @spec unavailable_reason() :: String.t() | nil
  def unavailable_reason do
    cond do
      System.find_executable("ip") == nil ->
        "iproute2 (`ip`) is not installed: apt-get install -y iproute2"

      System.find_executable("iptables") == nil ->
        "iptables is not installed: apt-get install -y iptables"

      System.cmd("id", ["-u"]) |> elem(0) |> String.trim() != "0" ->
        "the lab makes network namespaces, which needs root"

      true ->
        # Unique per call: test modules may ask at once while they compile.
        probe =
          "cvl#{Integer.to_string(String.to_integer(System.pid()), 36)}p" <>
            Integer.to_string(System.unique_integer([:positive]), 36)

        case System.cmd("ip", ["netns", "add", probe], stderr_to_stdout: true) do
          {_, 0} ->
            System.cmd("ip", ["netns", "del", probe], stderr_to_stdout: true)
            nil

          {out, _} ->
            "cannot make a network namespace here (ip netns add: #{String.trim(out)})"
        end
    end
  end

  @doc """
  Builds the lab with hosts `1..n` and starts a node on each (no strategy
  yet: see `start_strategy/3`). Options: `:listed` (hosts DNS lists at
  start, default all), `:args` (more erl arguments for every node, e.g.
  `["-kernel", "net_ticktime", "4"]`).
  """
  @spec start(pos_integer(), keyword()) :: t()
  def start(n, opts \\ []) do
    remove_stale()
    prefix = "cvl#{Integer.to_string(String.to_integer(System.pid()), 36)}_" <> counter()

    lab = %__MODULE__{prefix: prefix, bridge_ns: prefix <> "b", dns_ns: prefix <> "d"}

    ip!(["netns", "add", lab.bridge_ns])
    ns!(lab.bridge_ns, ["ip", "link", "set", "lo", "up"])
    ns!(lab.bridge_ns, ["ip", "link", "add", "br0", "type", "bridge"])
    ns!(lab.bridge_ns, ["ip", "link", "set", "br0", "up"])

    add_host_ns(lab, lab.dns_ns, "#{prefix}vd", @dns_ip)

    hosts =
      for i <- 1..n, into: %{} do
        ns = "#{prefix}h#{i}"
        ip = ip_of(i)
        add_host_ns(lab, ns, "#{prefix}v#{i}", ip)
        {i, %{ns: ns, ip: ip, node: node_of(i)}}
      end

    lab = %{lab | hosts: hosts}
    {dns_peer, dns_server} = start_dns(lab, Keyword.get(opts, :listed, Map.keys(hosts)))
    lab = %{lab | dns_peer: dns_peer, dns_server: dns_server}

    hosts =
      Map.new(hosts, fn {i, host} ->
        {:ok, peer, node} =
          :peer.start(%{
            name: ~c"app-4370",
            host: host.ip |> :inet.ntoa(),
            longnames: true,
            connection: :standard_io,
            exec: {to_charlist(System.find_executable("ip")), netns_exec(host.ns)},
            args:
              Enum.map(
                BeamNode.erl_args(host.ip,
                  cookie: @cookie,
                  args: ["-caravan_nameservers", nameserver()] ++ Keyword.get(opts, :args, [])
                ),
                &String.to_charlist/1
              ),
            wait_boot: 60_000
          })

        :ok = BeamNode.call(peer, __MODULE__.Probe, :start, [])
        os_pid = BeamNode.call(peer, :os, :getpid, []) |> List.to_integer()
        {i, Map.merge(host, %{peer: peer, node: node, os_pid: os_pid})}
      end)

    %{lab | hosts: hosts}
  end

  @doc "Stops every node, kills what still runs in the lab and deletes its namespaces."
  @spec stop(t()) :: :ok
  def stop(%__MODULE__{} = lab) do
    for {_i, host} <- lab.hosts do
      # A frozen node would never answer.
      if host[:os_pid],
        do: System.cmd("kill", ["-CONT", "#{host.os_pid}"], stderr_to_stdout: true)

      if host[:peer], do: BeamNode.stop(host.peer)
    end

    if lab.dns_peer, do: BeamNode.stop(lab.dns_peer)
    namespaces = [lab.dns_ns, lab.bridge_ns | for({_, h} <- lab.hosts, do: h.ns)]

    Enum.each(namespaces, &remove_namespace/1)
  end

  # Labs left by a test runner that was killed (on_exit never ran): the
  # namespaces whose name holds the OS pid of a process that is gone.
  # A live run's lab is never touched.
  @doc false
  def remove_stale do
    {list, _} = System.cmd("ip", ["netns", "list"], stderr_to_stdout: true)

    for line <- String.split(list, "\n", trim: true),
        [ns | _] = String.split(line),
        [_, pid36] <- [Regex.run(~r/\Acvl([0-9A-Z]+)_/, ns)],
        not File.exists?("/proc/#{String.to_integer(pid36, 36)}"),
        do: remove_namespace(ns)

    :ok
  end

  # Kills every process in network namespace `ns`, then deletes it.
  @doc false
  def remove_namespace(ns) do
    {pids, _} = System.cmd("ip", ["netns", "pids", ns], stderr_to_stdout: true)

    for pid <- String.split(pids),
        pid =~ ~r/\A\d+\z/,
        do: System.cmd("kill", ["-KILL", pid], stderr_to_stdout: true)

    System.cmd("ip", ["netns", "del", ns], stderr_to_stdout: true)
  end

  @doc "Host `i`'s node name."
  def node_of(i), do: :"app-4370@#{:inet.ntoa(ip_of(i))}"

  @doc "Host `i`'s address."
  def ip_of(i), do: {198, 18, 0, 10 + i}

  @doc "The peer (for `BeamNode.call/4`) of host `i`."
  def peer(lab, i), do: lab.hosts[i].peer

  @doc "Calls `m.f(a)` on host `i`'s node."
  def call(lab, i, m, f, a), do: BeamNode.call(peer(lab, i), m, f, a)

  @doc """
  Starts `Caravan.Cluster.DnsStrategy` on host `i` against the lab's DNS,
  poll 1 s, with `opts` on top. Logs at `:info` and above are recorded.
  """
  def start_strategy(lab, i, opts \\ []) do
    base = [
      query: @query,
      node_sname: "app",
      nameservers: [nameserver()],
      timeout: 500,
      poll_interval: 1_000
    ]

    {:ok, sup} = BeamNode.start_strategy(peer(lab, i), Keyword.merge(base, opts), :info)
    sup
  end

  @doc "DNS lists exactly `hosts` from the next query on."
  def set_listed(lab, hosts) do
    records = for i <- hosts, do: {1, 1, 4370, addr_target(ip_of(i))}

    :ok =
      BeamNode.call(lab.dns_peer, Caravan.Test.FaultDns, :set_records, [lab.dns_server, records])
  end

  @doc "Sets the DNS server's fault mode (see `Caravan.Test.FaultDns`), e.g. `:silent`."
  def set_dns_mode(lab, mode),
    do:
      :ok = BeamNode.call(lab.dns_peer, Caravan.Test.FaultDns, :set_mode, [lab.dns_server, mode])

  @doc "The nodes host `i` is connected to (visible), sorted."
  def connected(lab, i), do: lab |> call(i, Node, :list, []) |> Enum.sort()

  @doc "True when each host of `hosts` is connected to exactly the other hosts of `hosts`."
  def mesh?(lab, hosts) do
    Enum.all?(hosts, fn i ->
      connected(lab, i) == hosts |> List.delete(i) |> Enum.map(&node_of/1) |> Enum.sort()
    end)
  end

  @doc """
  Cuts every packet between `side_a` and `side_b` (lists of hosts), both
  ways, with iptables inside the hosts' namespaces. `heal/1` undoes it.
  """
  def partition(lab, side_a, side_b) do
    for {a, b} <- pairs(side_a, side_b) ++ pairs(side_b, side_a) do
      ns = lab.hosts[a].ns
      peer = :inet.ntoa(ip_of(b)) |> to_string()
      ns!(ns, ["iptables", "-w", "-A", "INPUT", "-s", peer, "-j", "DROP"])
      ns!(ns, ["iptables", "-w", "-A", "OUTPUT", "-d", peer, "-j", "DROP"])
    end

    :ok
  end

  @doc "Removes every iptables rule of every host."
  def heal(lab) do
    for {_i, host} <- lab.hosts, do: ns!(host.ns, ["iptables", "-w", "-F"])
    :ok
  end

  @doc "Freezes host `i`'s node (SIGSTOP); `thaw/2` resumes it."
  def freeze(lab, i), do: kill!("-STOP", lab.hosts[i].os_pid)

  @doc "Resumes host `i`'s node (SIGCONT)."
  def thaw(lab, i), do: kill!("-CONT", lab.hosts[i].os_pid)

  @doc """
  Host `i`'s recorded node events since `since` (`:os.system_time(:millisecond)`),
  oldest first: `{ms, :nodeup | :nodedown, node, reason}`.
  """
  def node_events(lab, i, since \\ 0) do
    {events, _logs} = call(lab, i, __MODULE__.Probe, :events, [])
    for {ms, _, _, _} = e <- events, ms >= since, do: e
  end

  @doc "Host `i`'s recorded `[caravan]` log lines since `since`, oldest first: `{ms, text}`."
  def logs(lab, i, since \\ 0) do
    {_events, logs} = call(lab, i, __MODULE__.Probe, :events, [])
    for {ms, _} = l <- logs, ms >= since, do: l
  end

  @doc """
  Every nodedown seen on `hosts` since `since`, as `{host, node, reason}`.
  """
  def nodedowns(lab, hosts, since) do
    for i <- hosts,
        {_ms, :nodedown, node, reason} <- node_events(lab, i, since),
        do: {i, node, reason}
  end

  @doc "Now, in the lab's clock (`:os.system_time(:millisecond)`)."
  def now, do: :os.system_time(:millisecond)

  # -- building ---------------------------------------------------------------

  # A namespace with eth0 (one end of a veth whose other end is on the
  # bridge), lo up, `ip`/24 and no default route.
  @doc false
  def add_host_ns(lab, ns, bridge_end, ip) do
    ip!(["netns", "add", ns])
    ns!(ns, ["ip", "link", "set", "lo", "up"])

    ns!(ns, [
      "ip",
      "link",
      "add",
      "eth0",
      "type",
      "veth",
      "peer",
      "name",
      bridge_end,
      "netns",
      lab.bridge_ns
    ])

    ns!(ns, ["ip", "addr", "add", "#{:inet.ntoa(ip)}/24", "dev", "eth0"])
    ns!(ns, ["ip", "link", "set", "eth0", "up"])
    ns!(lab.bridge_ns, ["ip", "link", "set", bridge_end, "master", "br0"])
    ns!(lab.bridge_ns, ["ip", "link", "set", bridge_end, "up"])
  end

  defp start_dns(lab, listed) do
    {:ok, peer, _node} =
      :peer.start(%{
        connection: :standard_io,
        exec: {to_charlist(System.find_executable("ip")), netns_exec(lab.dns_ns)},
        args: Enum.map(BeamNode.code_path_args(), &String.to_charlist/1),
        wait_boot: 60_000
      })

    {:ok, server} = BeamNode.call(peer, __MODULE__, :remote_start_dns, [@dns_ip, @dns_port])
    lab = %{lab | dns_peer: peer, dns_server: server}
    set_listed(lab, listed)
    {peer, server}
  end

  @doc false
  # Runs in the DNS namespace's BEAM: the server outlives the :peer.call.
  def remote_start_dns(ip, port) do
    parent = self()

    spawn(fn ->
      {:ok, server} = Caravan.Test.FaultDns.start_link(ip: ip, port: port, records: [])
      send(parent, {:dns, server})
      Process.sleep(:infinity)
    end)

    receive do
      {:dns, server} -> {:ok, server}
    after
      10_000 -> {:error, :timeout}
    end
  end

  @doc false
  def netns_exec(ns),
    do: [~c"netns", ~c"exec", to_charlist(ns), to_charlist(System.find_executable("erl"))]

  # Consul's .addr. form: 8 hex digits of the IPv4 address.
  defp addr_target({a, b, c, d}) do
    hex =
      for byte <- [a, b, c, d],
          into: "",
          do: byte |> Integer.to_string(16) |> String.pad_leading(2, "0")

    String.downcase(hex) <> ".addr.dc1.consul"
  end

  defp pairs(as, bs), do: for(a <- as, b <- bs, do: {a, b})

  @doc false
  def counter do
    n = :persistent_term.get({__MODULE__, :counter}, 0) + 1
    :persistent_term.put({__MODULE__, :counter}, n)
    Integer.to_string(n, 36)
  end

  @doc false
  def ip!(args), do: run!("ip", args)

  @doc false
  def ns!(ns, [cmd | args]), do: run!("ip", ["netns", "exec", ns, cmd | args])

  defp kill!(signal, os_pid), do: run!("kill", [signal, "#{os_pid}"])

  defp run!(cmd, args) do
    case System.cmd(cmd, args, stderr_to_stdout: true) do
      {_, 0} -> :ok
      {out, status} -> raise "lab: `#{Enum.join([cmd | args], " ")}` exited #{status}: #{out}"
    end
  end

  defmodule Probe do
    @moduledoc """
    Runs on a lab node: records every nodeup/nodedown with its reason
    (`:net_kernel.monitor_nodes(true, %{nodedown_reason: true})`) and every
    `[caravan]` log line, each with `:os.system_time(:millisecond)`.
    """

    @name :caravan_lab_probe

    @doc "Starts the probe on this node. Returns `:ok`."
    def start do
      :ok =
        Caravan.Test.PeerLog.start_collector(
          @name,
          fn -> :ok = :net_kernel.monitor_nodes(true, %{nodedown_reason: true}) end,
          fn -> loop([], []) end
        )

      # The node's own console stays quiet (its output reaches the test
      # runner's); the probe records what the tests look at. The primary
      # level stays as the node has it.
      Caravan.Test.PeerLog.capture(@name, __MODULE__, :error, nil)
    end

    @doc "`{node_events, logs}`, oldest first."
    def events, do: Caravan.Test.PeerLog.ask(@name, :events)

    @doc false
    # :logger handler callback.
    def log(%{msg: msg}, _config) do
      text = Caravan.Test.PeerLog.text(msg)

      if String.contains?(text, "[caravan]") or String.contains?(text, "'global'"),
        do: send(@name, {:log, :os.system_time(:millisecond), text})
    catch
      _, _ -> :ok
    end

    defp loop(nodes, logs) do
      receive do
        {:nodeup, node, _info} ->
          loop([{:os.system_time(:millisecond), :nodeup, node, nil} | nodes], logs)

        {:nodedown, node, info} ->
          reason = info[:nodedown_reason]
          loop([{:os.system_time(:millisecond), :nodedown, node, reason} | nodes], logs)

        {:log, ms, text} ->
          loop(nodes, [{ms, text} | logs])

        {:events, from} ->
          send(from, {@name, {Enum.reverse(nodes), Enum.reverse(logs)}})
          loop(nodes, logs)
      end
    end
  end
end
