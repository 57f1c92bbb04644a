defmodule Caravan.ConsulDnsTest do
  # Proves the Consul stand-in (test/support/consul_dns.ex) is as hostile as
  # Consul's DNS interface with its defaults: silent trimming over UDP (TC
  # never set), everything over TCP. Checked with a small hand-written UDP
  # client (raw reply size, TC bit and ANCOUNT read from the header bytes,
  # RFC 1035 4.1.1) and with :inet_res and its documented :inet_dns
  # accessors. Each test's server has a loopback address of its own
  # (Caravan.Test.Loopback), so the file runs async.
  use ExUnit.Case, async: true

  @moduletag :integration

  alias Caravan.Test.{ConsulDns, Loopback}

  @port 8611

  setup do
    # The helpers below ask this test's server: its address is kept in the
    # test process.
    ip = Loopback.ip()
    Process.put(:dns_ip, ip)
    server = start_supervised!({ConsulDns, port: @port, ip: ip, instances: 40})
    %{server: server}
  end

  test "UDP without EDNS0: 3 SRV records, each with an A and a TXT record, no TC" do
    reply = udp_query("web.service.consul", nil)
    assert %{tc: false, ancount: 3, arcount: 6, rcode: 0} = header(reply)
  end

  test "UDP with EDNS0 1232: a strict subset that fits, no TC, OPT echoed" do
    reply = udp_query("_web._tcp.service.consul", 1232)
    %{tc: tc, ancount: ancount, arcount: arcount} = header(reply)
    refute tc
    assert ancount > 3 and ancount < 40
    # A + TXT per SRV record, plus the OPT record.
    assert arcount == 2 * ancount + 1
    assert byte_size(reply) <= 1232 + 11

    {:ok, msg} = inet_res("_web._tcp.service.consul", edns: 0, udp_payload_size: 1232)
    targets = srv_targets(msg)
    # Target names differ in length (node1, node40), so each shuffled
    # subset holds a few records more or less.
    assert length(targets) > 3 and length(targets) < 40
    assert MapSet.subset?(MapSet.new(targets), all_targets(:node))
  end

  test "TCP: all 40 records", %{server: server} do
    {:ok, msg} = inet_res("web.service.dc1.consul", usevc: true)
    assert MapSet.new(srv_targets(msg)) == all_targets(:node)
    assert %{tcp: 1} = ConsulDns.queries(server)
  end

  test "500 instances: TCP gives all, within 64 KB", %{server: server} do
    :ok = ConsulDns.set_instances(server, 500)
    {:ok, msg} = inet_res("_web._tcp.service.consul", usevc: true)
    assert length(srv_targets(msg)) == 500
  end

  test "answers are shuffled: two trimmed answers differ" do
    answers =
      for _ <- 1..5 do
        {:ok, msg} = inet_res("web.service.consul", edns: 0, udp_payload_size: 1232)
        srv_targets(msg)
      end

    assert length(Enum.uniq(answers)) > 1
  end

  test ".addr. targets, AAAA, TTL 0 and the target's address lookups", %{server: server} do
    stop_supervised!(ConsulDns)

    start_supervised!(
      {ConsulDns, port: @port, ip: ip(), instances: 4, target: :addr, family: :inet6}
    )

    {:ok, msg} = inet_res("web.service.consul", usevc: true)
    [first | _] = :inet_dns.msg(msg, :anlist)
    assert :inet_dns.rr(first, :ttl) == 0
    {1, 1, _port, target} = :inet_dns.rr(first, :data)
    assert to_string(target) =~ ~r/^fd0{29}[1-4]\.addr\.dc1\.consul$/

    {:ok, aaaa} = inet_res(to_string(target), type: :aaaa)

    assert [{0xFD00, 0, 0, 0, 0, 0, 0, _}] =
             for(rr <- :inet_dns.msg(aaaa, :anlist), do: :inet_dns.rr(rr, :data))

    _ = server
  end

  test "node targets resolve; unknown names are NXDOMAIN" do
    {:ok, msg} = inet_res("node7.node.dc1.consul", type: :a)
    assert [{10, 0, 0, 7}] = for(rr <- :inet_dns.msg(msg, :anlist), do: :inet_dns.rr(rr, :data))
    assert {:error, :nxdomain} = inet_res("nope.service.consul", [])
  end

  # -- a small client ----------------------------------------------------------

  defp ip, do: Process.get(:dns_ip)

  defp all_targets(form) do
    for i <- 1..40,
        into: MapSet.new(),
        do: ConsulDns.target(%{node: "node#{i}", ip: {10, 0, 0, i}}, form, "dc1")
  end

  defp inet_res(name, opts) do
    {type, opts} = Keyword.pop(opts, :type, :srv)

    :inet_res.resolve(
      String.to_charlist(name),
      :in,
      type,
      [nameservers: [{ip(), @port}], timeout: 2_000, retry: 1] ++ opts
    )
  end

  defp srv_targets(msg) do
    for rr <- :inet_dns.msg(msg, :anlist), :inet_dns.rr(rr, :type) == :srv do
      {_prio, _weight, _port, target} = :inet_dns.rr(rr, :data)
      to_string(target)
    end
  end

  # A query for SRV records, with an OPT record of `payload` bytes or none.
  defp udp_query(name, payload) do
    qname =
      for label <- String.split(name, "."), into: <<>>, do: <<byte_size(label), label::binary>>

    {arcount, opt} =
      if payload, do: {1, <<0, 41::16, payload::16, 0::32, 0::16>>}, else: {0, <<>>}

    query =
      <<0x1234::16, 0x0100::16, 1::16, 0::16, 0::16, arcount::16, qname::binary, 0, 33::16, 1::16,
        opt::binary>>

    {:ok, socket} = :gen_udp.open(0, [:binary, active: false])

    try do
      :ok = :gen_udp.send(socket, ip(), @port, query)
      {:ok, {_ip, _port, reply}} = :gen_udp.recv(socket, 65_535, 2_000)
      reply
    after
      :gen_udp.close(socket)
    end
  end

  defp header(
         <<_id::16, 1::1, _op::4, _aa::1, tc::1, _rd::1, _ra::1, _z::3, rcode::4, _qd::16, an::16,
           _ns::16, ar::16, _::binary>>
       ),
       do: %{tc: tc == 1, ancount: an, arcount: ar, rcode: rcode}
end
