defmodule Caravan.Integration.DynamicPortsTest do
  # Dynamic ports outside the lab: real nodes on 127.0.0.x named without a
  # port (app@<ip>), each listening on its own ERL_DIST_PORT or
  # -erl_epmd_port, found through Consul-shaped SRV records that carry those
  # ports (node_port: :srv), beside a node with its port in its name. DNS
  # servers are the Consul stand-in, one per job so each one's query count
  # says who asked: the strategies poll `poll`, the epmd modules of A and B
  # ask `epmd` at connect time, the other nodes ask `other`.
  use ExUnit.Case, async: false

  alias Caravan.Test.{BeamNode, ConsulDns}

  @moduletag :integration
  @moduletag timeout: 180_000

  @query "_web._tcp.service.consul"
  @poll_ms 500

  @a %{node: "a", ip: {127, 0, 0, 2}, port: 23_456}
  @b %{node: "b", ip: {127, 0, 0, 3}, port: 23_457}
  @c %{node: "c", ip: {127, 0, 0, 4}, port: 23_458}

  setup_all do
    server = fn id, ip, opts ->
      spec = {ConsulDns, [port: 8600, ip: ip, target: :addr] ++ opts}
      {id, start_supervised!(Supervisor.child_spec(spec, id: id))}
    end

    Map.new([
      server.(:poll, {127, 0, 3, 1}, instances: [@a, @b]),
      server.(:epmd, {127, 0, 3, 2}, instances: [@a, @b, @c]),
      server.(:legacy, {127, 0, 3, 3},
        service: "legacy",
        instances: [%{node: "d", ip: {127, 0, 0, 5}, port: 4370}]
      ),
      server.(:other, {127, 0, 3, 4}, instances: [@a, @b, @c])
    ])
  end

  defp env(dns, server),
    do: [
      {"CARAVAN_NAMESERVERS", ConsulDns.nameserver(dns[server])},
      {"CARAVAN_SRV_QUERY", @query}
    ]

  defp start(name, ip, opts) do
    {peer, node} = BeamNode.start(name, to_string(:inet.ntoa(ip)), ip, opts)
    on_exit(fn -> BeamNode.stop(peer) end)
    {peer, node}
  end

  defp srv_topology(dns),
    do: [
      topology: :caravan,
      query: @query,
      node_sname: "app",
      node_port: :srv,
      nameservers: [ConsulDns.nameserver(dns.poll)],
      poll_interval: @poll_ms
    ]

  defp queries(server), do: server |> ConsulDns.queries() |> Map.values() |> Enum.sum()
  defp connected?({peer, _}, {_, node}), do: node in BeamNode.call(peer, Node, :list, [])

  test "names without ports, ports from SRV, beside a port-in-name node", dns do
    a = start("app", @a.ip, env: [{"ERL_DIST_PORT", "23456"} | env(dns, :epmd)])
    # The flag wins over the variable.
    b =
      start("app", @b.ip,
        env: [{"ERL_DIST_PORT", "1"} | env(dns, :epmd)],
        args: ["-erl_epmd_port", "23457"]
      )

    d = start("app-4370", {127, 0, 0, 5}, env: env(dns, :other))

    {:ok, _} = BeamNode.start_strategy(elem(a, 0), srv_topology(dns))
    {:ok, _} = BeamNode.start_strategy(elem(b, 0), srv_topology(dns))

    {:ok, _} =
      BeamNode.start_strategy(elem(a, 0),
        topology: :legacy,
        query: "_legacy._tcp.service.consul",
        node_sname: "app",
        nameservers: [ConsulDns.nameserver(dns.legacy)],
        poll_interval: @poll_ms
      )

    assert BeamNode.eventually(fn -> BeamNode.full_mesh?([a, b, d]) end)

    assert BeamNode.call(elem(a, 0), Caravan.Epmd.Client, :names, []) ==
             {:ok, [{~c"app", 23_456}]}

    assert BeamNode.call(elem(b, 0), Caravan.Epmd.Client, :names, []) ==
             {:ok, [{~c"app", 23_457}]}

    refute BeamNode.listening?({127, 0, 0, 2}, 4370)

    # Diagnose names the port source of every listed node, and its own.
    report = BeamNode.call(elem(a, 0), Caravan, :diagnose, [[print: false]])
    assert report =~ "listening on port 23456 (from ERL_DIST_PORT), 127.0.0.2"
    assert report =~ "app@127.0.0.3: resolves to 127.0.0.3, port 23457 accepts TCP, connected"
    assert report =~ "(port from SRV, last poll of topology caravan)"
    assert report =~ "app-4370@127.0.0.5: resolves to 127.0.0.5, port 4370 accepts TCP"
    assert report =~ "(port from the node name)"

    # Connects to listed nodes ask DNS nothing: the epmd modules' server
    # counts no query across a disconnect and reconnect.
    before = queries(dns.epmd)
    assert BeamNode.call(elem(a, 0), :erlang, :disconnect_node, [elem(b, 1)])
    assert BeamNode.call(elem(a, 0), :net_kernel, :connect_node, [elem(b, 1)])
    assert queries(dns.epmd) == before

    # A node no poll listed: found at connect time through the SRV query.
    c = start("app", @c.ip, env: [{"ERL_DIST_PORT", "23458"} | env(dns, :other)])
    assert BeamNode.call(elem(a, 0), :net_kernel, :connect_node, [elem(c, 1)])
    assert queries(dns.epmd) > before

    # A node no SRV record lists: refused within the lookup timeout, naming the query.
    {micros, result} =
      :timer.tc(fn ->
        BeamNode.call(elem(a, 0), Caravan.Epmd.Client, :address_please, [
          ~c"app",
          ~c"127.0.0.9",
          :inet
        ])
      end)

    assert {:error, {:no_srv_record, message}} = result
    assert message =~ "app@127.0.0.9"
    assert message =~ @query
    assert micros < 2_000_000
    refute BeamNode.call(elem(a, 0), :net_kernel, :connect_node, [:"app@127.0.0.9"])

    # A moved allocation (same name, new port) rejoins within two polls.
    BeamNode.stop(elem(b, 0))
    moved = %{@b | port: 23_467}

    for server <- [dns.poll, dns.epmd, dns.other],
        do: ConsulDns.set_instances(server, [@a, moved, @c])

    b2 = start("app", @b.ip, env: [{"ERL_DIST_PORT", "23467"} | env(dns, :epmd)])

    started = System.monotonic_time(:millisecond)
    assert BeamNode.eventually(fn -> connected?(a, b2) end, 10_000)
    assert System.monotonic_time(:millisecond) - started < 2 * @poll_ms + 1_500
  end

  defp erl(args, env) do
    System.cmd(
      "erl",
      ["-noshell"] ++ args ++ ["-eval", "io:format(\"booted as ~s~n\", [node()]), halt()."],
      stderr_to_stdout: true,
      env: env
    )
  end

  test "the listen port from ERL_DIST_PORT is said at boot; a bad value stops the boot" do
    args = ["-name", "app@127.0.4.21"] ++ BeamNode.erl_args({127, 0, 4, 21})
    {out, 0} = erl(args, [{"ERL_DIST_PORT", "23481"}])
    assert out =~ "[caravan] listening on port 23481 from ERL_DIST_PORT"
    assert out =~ "booted as app@127.0.4.21"

    {out, 0} = erl(args ++ ["-erl_epmd_port", "23482"], [{"ERL_DIST_PORT", "23481"}])
    assert out =~ "[caravan] listening on port 23482 from -erl_epmd_port"

    {out, status} = erl(args, [{"ERL_DIST_PORT", "70000"}])
    assert status != 0
    refute out =~ "booted"
    assert out =~ ~s([caravan] invalid ERL_DIST_PORT "70000": expected a port in 1..65535)
  end
end
