defmodule Caravan.Integration.EarlyDialTest do
  # A doubted UDP answer's records are handed over while the complete
  # answer comes over TCP, and a poll dials them at once; the lookup's and
  # the poll's results are still only the complete answer. Against dnsmasq,
  # which sets TC on an answer over 1232 bytes: up to 2.90 it keeps the
  # records that fit (30 of these 40), from 2.91 it sends none (Debian
  # trixie and sid), and then there is nothing to hand over early. Which
  # one runs here is asked once, with a raw UDP query, in setup_all.
  # Not async: it forgets the VM's TCP memory, which other tests count on.
  use ExUnit.Case, async: false
  @moduletag :integration

  alias Caravan.Cluster.{Config, Poll}
  alias Caravan.Test.{Dnsmasq, Loopback}

  @query "_big._tcp.service.consul"
  @small "_small._tcp.service.consul"
  @count 40

  setup_all do
    # The poll finds the client's get_nodes/2 with function_exported?/3.
    Code.ensure_loaded!(Caravan.DnsClient.Native)
    targets = for i <- 1..@count, do: "e#{i}.node.dc1.consul"

    dns =
      Dnsmasq.start(
        listen: Loopback.address(),
        port: 8744,
        srv:
          for(t <- targets, do: {@query, t, 4370}) ++
            for(t <- Enum.take(targets, 2), do: {@small, t, 4370}),
        hosts: for({t, i} <- Enum.with_index(targets, 1), do: {t, "10.7.0.#{i}"})
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)
    ns = Dnsmasq.nameserver(dns)
    %{ns: ns, keeps?: truncated_answer_count(ns) > 0}
  end

  # How many SRV records the server's truncated UDP answer to @query holds
  # (EDNS0, 1232 bytes), read from the header of the raw reply.
  defp truncated_answer_count(ns) do
    {:ok, [{ip, port}]} = Caravan.DNS.Options.parse([ns])
    name = for label <- String.split(@query, "."), into: <<>>, do: <<byte_size(label)>> <> label
    opt = <<0, 41::16, 1232::16, 0::32, 0::16>>

    query =
      <<7::16, 0x0100::16, 1::16, 0::16, 0::16, 1::16>> <> name <> <<0, 33::16, 1::16>> <> opt

    {:ok, socket} = :gen_udp.open(0, [:binary, active: false])
    :ok = :gen_udp.send(socket, ip, port, query)

    {:ok, {_, _, <<7::16, flags::16, _::16, answers::16, _::binary>>}} =
      :gen_udp.recv(socket, 0, 2_000)

    :gen_udp.close(socket)
    assert Bitwise.band(flags, 0x0200) != 0, "the UDP answer was expected truncated"
    answers
  end

  # Each test asks from a fresh TCP memory, so its first lookup goes UDP,
  # is truncated, and then asks over TCP.
  defp forget, do: Caravan.Native.forget_transports()

  test "a truncated answer's records come early, a subset of the complete answer",
       %{ns: ns, keeps?: keeps?} do
    forget()
    me = self()
    early = fn records -> send(me, {:early, records}) end
    assert {:ok, records} = Caravan.DNS.lookup_srv(@query, nameservers: [ns], early: early)
    assert length(records) == @count
    assert Enum.all?(records, &(&1.transport == "tcp"))

    if keeps? do
      assert_received {:early, partial}
      assert partial != [] and length(partial) < @count
      assert Enum.all?(partial, &(&1.transport == "udp"))
      targets = MapSet.new(records, & &1.target)
      assert Enum.all?(partial, &MapSet.member?(targets, &1.target))
    end

    # Once per lookup, and none left behind.
    refute_received {:early, _}
    refute_received {:caravan_srv_early, _, _}

    # The next lookup goes straight over TCP: nothing to hand over early.
    assert {:ok, again} = Caravan.DNS.lookup_srv(@query, nameservers: [ns], early: early)
    assert length(again) == @count
    refute_received {:early, _}
  end

  test "an answer that fits UDP is never handed over early", %{ns: ns} do
    me = self()

    assert {:ok, [_, _]} =
             Caravan.DnsClient.Native.get_nodes(@small,
               nameservers: [ns],
               early: &send(me, {:early, &1})
             )

    refute_received {:early, _}
    refute_received {:caravan_srv_early, _, _}
  end

  test "a poll dials the early peers at once and keeps only the complete answer",
       %{ns: ns, keeps?: keeps?} do
    forget()
    {:ok, dialed} = Agent.start_link(fn -> [] end)
    me = self()
    {:ok, parsed} = Caravan.DNS.Options.parse([ns])

    config =
      struct!(Config,
        node_sname: "app",
        queries: [@query],
        nameservers: parsed,
        timeout: 2_000,
        connect: {__MODULE__, :record_connect, [dialed, me]},
        list_nodes: {__MODULE__, :no_nodes, []}
      )

    result = Poll.run(config)
    assert length(result.found) == @count
    assert result.authoritative?
    assert result.new == result.found
    # Early connects (of the truncated answer's peers that came with their
    # addresses) name only nodes of the complete answer.
    early = Agent.get(dialed, & &1)
    assert Enum.all?(early, &(&1 in result.found))
    if keeps?, do: assert(early != [])

    # Without the early dial, nothing is dialed by the poll itself.
    forget()
    {:ok, none} = Agent.start_link(fn -> [] end)
    config = %{config | connect: {__MODULE__, :record_connect, [none, me]}}
    assert length(Poll.run(config, false).found) == @count
    assert Agent.get(none, & &1) == []
  end

  @doc false
  def record_connect(agent, test, node) do
    Agent.update(agent, &[node | &1])
    send(test, {:dialed, node})
    true
  end

  @doc false
  def no_nodes, do: []
end
