defmodule Caravan.Integration.ForwardersTest do
  # Membership through a real DNS forwarder: Debian's unbound in front of
  # the Consul stand-in (Caravan.Test.ConsulDns, which trims UDP answers
  # silently as Consul does), configured as Consul's guide says (a
  # stub-zone: unbound asks over UDP and serves the trimmed answer as
  # whole) and with stub-tcp-upstream (whole answers). libcluster's hooks
  # are stood in by this module: connects are recorded and count as
  # connected, so a prune would show as an ask or a disconnect.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Caravan.Cluster.DnsStrategy
  alias Caravan.Diagnose.TopologySection
  alias Caravan.Test.{ConsulDns, Loopback, Topology, Unbound}

  @moduletag :integration
  @query "web.service.consul"

  if Unbound.executable() == nil do
    @moduletag skip:
                 "unbound is not installed (apt-get install unbound; script/setup installs it)"
  end

  @doc false
  def connect(test, agent, node) do
    Agent.update(agent, &[node | &1])
    send(test, {:connect, node})
    true
  end

  setup do
    server = start_supervised!({ConsulDns, port: 8600, ip: Loopback.ip(), instances: 40})
    %{server: server, names: for(i <- ConsulDns.instances(server), do: name(i))}
  end

  defp name(instance), do: :"app-#{instance.port}@#{ConsulDns.target(instance, :node, "dc1")}"

  defp unbound(server, opts) do
    ub = Unbound.start(ConsulDns.nameserver(server), [ip: Loopback.ip()] ++ opts)
    on_exit(fn -> Unbound.stop(ub) end)
    Unbound.nameserver(ub)
  end

  defp start(nameserver, poll_interval) do
    {:ok, agent} = Agent.start_link(fn -> [] end)

    config = [
      query: @query,
      node_sname: "app",
      nameservers: [nameserver],
      poll_interval: poll_interval,
      prune: true
    ]

    state = %{
      Topology.state(config, self(), agent)
      | connect: {__MODULE__, :connect, [self(), agent]}
    }

    start_supervised!({DnsStrategy, [state]})
  end

  defp connects(acc, until) do
    receive do
      {:connect, node} -> connects(MapSet.put(acc, node), until)
    after
      max(until - System.monotonic_time(:millisecond), 0) -> acc
    end
  end

  test "behind unbound as Consul's guide says: all 40 dialed, none pruned in 12 s, one warning",
       %{server: server, names: names} do
    ns = unbound(server, [])

    {dialed, log} =
      with_log(fn ->
        strategy = start(ns, 500)
        dialed = connects(MapSet.new(), System.monotonic_time(:millisecond) + 12_000)
        assert :sys.get_state(strategy).membership.departed == %{}
        # Caravan.diagnose() names the same problem.
        {:ok, status} = DnsStrategy.status(strategy)
        found = %{at: System.monotonic_time(), last_poll: status.last_poll}
        found = Map.merge(found, %{lookups: [], nodes: [], probes: []})
        {lines, problems} = TopologySection.render("running", status.config, found)
        assert Enum.any?(lines, &(&1 =~ ~r/answers hold \d+ of at least \d+ instances seen/))
        assert Enum.any?(problems, &(&1 =~ "stub-tcp-upstream: yes"))
        dialed
      end)

    assert MapSet.equal?(dialed, MapSet.new(names))
    refute_received {:disconnect, _}
    refute log =~ "no longer lists"
    refute log =~ "asked "
    [warning] = Regex.scan(~r/\[warning\].*answers hold \d+ of at least \d+ instances[^\n]*/, log)
    assert warning |> hd() =~ "nameservers: #{ns}"
    assert warning |> hd() =~ "stub-tcp-upstream: yes"
  end

  for {via, label} <- [
        tcp_upstream: "behind unbound with stub-tcp-upstream",
        straight: "straight"
      ] do
    @tag via: via
    test "#{label}: whole answers, no warning, a delisted instance pruned within leave_after polls",
         %{server: server, names: names, via: via} do
      ns =
        if via == :straight,
          do: ConsulDns.nameserver(server),
          else: unbound(server, tcp_upstream: true)

      [last | _] = Enum.reverse(names)

      log =
        capture_log(fn ->
          strategy = start(ns, 200)
          dialed = connects(MapSet.new(), System.monotonic_time(:millisecond) + 1_500)
          assert MapSet.equal?(dialed, MapSet.new(names))

          :ok = ConsulDns.set_instances(server, Enum.drop(ConsulDns.instances(server), -1))
          # Asked at the first answer without it, disconnected after
          # leave_after (3) more: the fake node never leaves by itself.
          assert_receive {:disconnect, ^last}, 5 * 200 + 1_000
          assert Map.has_key?(:sys.get_state(strategy).membership.departed, last)
        end)

      assert log =~ "DNS no longer lists #{last}"
      refute log =~ "answers hold"
    end
  end
end
