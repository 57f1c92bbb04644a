defmodule Caravan.OneXConfigTest do
  # Caravan 1.x configs carry over: the VM's resolver
  # configuration (a real erl_inetrc, given with `-kernel inetrc`) is what
  # lookups ask when there is no :nameservers key, and 1.x's
  # `dns_client: Caravan.DnsClient.InetRes` works. The DNS server is the
  # Consul stand-in (Caravan.Test.ConsulDns; Consul cannot be installed
  # here), which trims UDP answers silently as Consul does.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.DnsClient.InetRes
  alias Caravan.Test.{BeamNode, ConsulDns, Loopback}

  @moduletag timeout: 120_000

  @dns_port 8614

  # Each test's DNS server and nodes take loopback addresses of their own
  # (Caravan.Test.Loopback). Not async: the nodes listen on the fixed
  # distribution port 4370.
  setup do
    %{dns_ip: Loopback.ip()}
  end

  describe "Caravan.DnsClient.InetRes against the Consul stand-in" do
    for n <- [40, 500], form <- [:node, :addr] do
      @tag n: n, form: form
      test "sees all #{n} instances with .#{form}. targets, both query forms",
           %{n: n, form: form, dns_ip: dns_ip} do
        server =
          start_supervised!({ConsulDns, port: @dns_port, ip: dns_ip, instances: n, target: form})

        ns = ConsulDns.nameserver(server)

        expected =
          for i <- ConsulDns.instances(server), do: {i.port, ConsulDns.expected_host(i, form)}

        for query <- ["web.service.consul", "_web._tcp.service.consul"] do
          assert {:ok, peers} = InetRes.get_nodes(query, nameservers: [ns], timeout: 5_000)
          assert Enum.sort(peers) == Enum.sort(expected)
        end
      end
    end

    test "two instances stay on one UDP query; NXDOMAIN is no peers; failures name the nameserver",
         %{dns_ip: dns_ip} do
      server = start_supervised!({ConsulDns, port: @dns_port, ip: dns_ip, instances: 2})
      ns = ConsulDns.nameserver(server)

      assert {:ok, [{20_001, _}, {20_002, _}]} =
               InetRes.get_nodes("web.service.consul", nameservers: [ns])

      assert ConsulDns.queries(server) == %{udp: 1, tcp: 0}
      assert {:ok, []} = InetRes.get_nodes("nope.service.consul", nameservers: [ns])

      # Nothing listens here.
      dead = Loopback.address() <> ":8615"

      assert {:error, {_kind, message}} =
               InetRes.get_nodes("web.service.consul", nameservers: [dead], timeout: 300)

      assert message =~ dead
    end

    test "the strategy's config accepts it (Caravan 1.x's documented dns_client)" do
      assert {:ok, %{dns_client: InetRes}} =
               Caravan.Cluster.Config.new(
                 topology: :app,
                 query: "web.service.consul",
                 node_sname: "app",
                 dns_client: InetRes
               )
    end
  end

  describe "a node configured the 1.x way (erl_inetrc, no :nameservers)" do
    setup %{dns_ip: dns_ip} do
      hosts = [{"web1", Loopback.ip()}, {"web2", Loopback.ip()}]
      instances = for {node, ip} <- hosts, do: %{node: node, ip: ip, port: 4370}
      start_supervised!({ConsulDns, port: @dns_port, ip: dns_ip, instances: instances})

      tmp = Path.join(System.tmp_dir!(), "caravan_1x_#{System.unique_integer([:positive])}")
      File.mkdir_p!(tmp)
      inetrc = Path.join(tmp, "erl_inetrc")

      # A 1.x erl_inetrc. `{resolv_conf, ""}` comes first: otherwise OTP
      # re-reads /etc/resolv.conf later and replaces the nameserver line
      # (OTP's own lookups, such as the epmd module's host lookups through
      # :inet, would then miss it; Caravan's native lookups read the file's
      # nameserver lines themselves).
      File.write!(inetrc, """
      {resolv_conf, ""}.
      {lookup, [dns]}.
      {nameserver, #{inspect(dns_ip)}, #{@dns_port}}.
      """)

      on_exit(fn -> File.rm_rf!(tmp) end)
      %{hosts: hosts, inetrc: inetrc}
    end

    for client <- [:default, InetRes] do
      @tag client: client
      test "joins the cluster with dns_client #{inspect(client)}", %{
        hosts: hosts,
        inetrc: inetrc,
        client: client,
        dns_ip: dns_ip
      } do
        nodes =
          for {name, ip} <- hosts do
            {peer, node} =
              BeamNode.start("app-4370", "#{name}.node.dc1.consul", ip,
                args: ["-kernel", "inetrc", inspect(inetrc)]
              )

            on_exit(fn -> BeamNode.stop(peer) end)
            {peer, node}
          end

        [{peer1, _} | _] = nodes
        # The VM took the erl_inetrc, and Caravan asks its nameserver.
        assert BeamNode.call(peer1, :inet_db, :res_option, [:nameservers]) == [
                 {dns_ip, @dns_port}
               ]

        assert BeamNode.call(peer1, Caravan.DNS, :vm_nameservers, []) ==
                 ["#{:inet.ntoa(dns_ip)}:#{@dns_port}"]

        for {peer, _node} <- nodes do
          opts = [query: "web.service.consul", node_sname: "app", poll_interval: 500]
          opts = if client == :default, do: opts, else: [dns_client: client] ++ opts
          assert {:ok, _} = BeamNode.start_strategy(peer, opts)
        end

        assert BeamNode.eventually(fn -> BeamNode.full_mesh?(nodes) end),
               "no full mesh: " <>
                 inspect(
                   for {peer, node} <- nodes, do: {node, BeamNode.call(peer, Node, :list, [])}
                 )
      end
    end
  end
end
