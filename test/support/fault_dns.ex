defmodule Caravan.Test.FaultDns do
  @moduledoc """
  A hostile or broken DNS server for tests, on UDP and TCP on loopback.

  Built on OTP's own DNS codec (`:inet_dns`, kernel's encoder/decoder used by
  `inet_res`): queries are decoded with it and answers encoded with it,
  except for the malformed packets, which are written byte by byte. The
  fault (the *mode*) can be switched while it runs with `set_mode/2`:

    * `:normal` - answers the SRV query with the configured records.
    * `:silent` - never answers (UDP dropped; TCP accepted and left hanging).
    * `{:delay, ms}` - the normal answer, `ms` late.
    * `:servfail`, `:refused` - RCODE 2 or 5, no records.
    * `{:truncate, tcp}` - over UDP the TC bit and no records; over TCP
      `tcp: :full` gives the full answer, `tcp: :dead` closes the connection
      at once.
    * `{:malformed, kind}` - `:garbage` (the query's id and response flags,
      then bytes that are no DNS message),
      `:short` (half a header), `:missing_records` (a header claiming five
      answers, none present), `:label_too_long` (an SRV target with a
      64-byte label, which the wire format cannot hold), `:pointer_loop` (an
      SRV target that is a compression pointer to itself).
    * `:wrong_id` - the normal answer with another message id (a spoofed
      or stale answer), which a resolver must ignore.
    * `{:records, n}` - `n` SRV records (thousands); over UDP the TC bit when
      they do not fit the query's EDNS payload size, all of them over TCP.
    * `:bad_targets` - the configured records plus targets that are not host
      names (a space, `_`, a `.` inside a label, non-ASCII, a leading `-`,
      the root `.`).
    * `:edge_ports` - the configured records plus SRV ports 0, 1 and 65535.
    * `:cname_self` - a CNAME from the query name to itself.
    * `:cname_loop` - the query name is a CNAME to `loop-b.<query>`, which
      is a CNAME back to the query name (both in the answer; asked for
      either, the same loop).
    * `:cname_chain` - not a fault, the control for the two above: the query
      name is a CNAME to `end.<query>`, which exists with no records
      (NOERROR, empty): an honest NODATA at the end of a chain.

  The server is linked to whoever starts it (use `start_supervised!/1` in
  a test) and its sockets close when it stops.
  """
  use GenServer

  import Bitwise

  alias Caravan.Test.DnsSockets

  @default_records [
    {1, 1, 4801, "web1.node.dc1.consul"},
    {1, 1, 4802, "web2.node.dc1.consul"}
  ]

  @type mode :: term()

  @doc """
  Starts the server. Options: `:ip` (`{127, 0, 2, 1}`), `:port` (required;
  the same port for UDP and TCP), `:mode` (`:normal`), `:records`
  (`[{priority, weight, port, target}]` for the normal answer).
  """
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc "The nameserver string for Caravan options, e.g. `\"127.0.2.1:8720\"`."
  def nameserver(server), do: GenServer.call(server, :nameserver)

  @doc "Switches the fault; takes effect for the next query."
  def set_mode(server, mode), do: GenServer.call(server, {:set_mode, mode})

  @doc "Replaces the records of the normal answer (`[{priority, weight, port, target}]`)."
  def set_records(server, records), do: GenServer.call(server, {:set_records, records})

  @doc "How many queries arrived: `%{udp: n, tcp: m}`."
  def queries(server), do: GenServer.call(server, :queries)

  # -- server ----------------------------------------------------------------

  @impl true
  def init(opts) do
    ip = Keyword.get(opts, :ip, {127, 0, 2, 1})
    port = Keyword.fetch!(opts, :port)

    sockets = DnsSockets.open(ip, port)

    {:ok,
     %{
       ip: ip,
       port: port,
       sockets: sockets,
       mode: Keyword.get(opts, :mode, :normal),
       records: Keyword.get(opts, :records, @default_records),
       queries: %{udp: 0, tcp: 0}
     }}
  end

  @impl true
  def handle_call(:nameserver, _from, state),
    do: {:reply, "#{:inet.ntoa(state.ip)}:#{state.port}", state}

  def handle_call({:set_mode, mode}, _from, state), do: {:reply, :ok, %{state | mode: mode}}

  def handle_call({:set_records, records}, _from, state),
    do: {:reply, :ok, %{state | records: records}}

  def handle_call(:queries, _from, state), do: {:reply, state.queries, state}

  # A TCP connection asks what to do with one query.
  def handle_call({:answer, :tcp, packet}, _from, state) do
    state = count(state, :tcp)
    {:reply, respond(state.mode, :tcp, packet, state.records), state}
  end

  @impl true
  def handle_info({:udp, udp, ip, port, packet}, %{sockets: %{udp: udp}} = state) do
    state = count(state, :udp)

    DnsSockets.reply_udp(
      state.sockets,
      ip,
      port,
      respond(state.mode, :udp, packet, state.records)
    )

    {:noreply, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state), do: DnsSockets.close(state.sockets)

  defp count(state, transport),
    do: %{state | queries: Map.update!(state.queries, transport, &(&1 + 1))}

  # -- answers ---------------------------------------------------------------

  # {:reply, bin} | {:delay, ms, bin} | :drop | :close
  defp respond(mode, transport, packet, records) do
    case :inet_dns.decode(packet) do
      {:ok, query} -> answer(mode, transport, query, records)
      # Not a DNS query: a real server would drop it too.
      {:error, _} -> :drop
    end
  end

  defp answer(:silent, _transport, _query, _records), do: :drop

  defp answer({:delay, ms}, transport, query, records) do
    {:reply, bin} = answer(:normal, transport, query, records)
    {:delay, ms, bin}
  end

  defp answer(:normal, _transport, query, records),
    do: {:reply, encode(query, srv_records(query, records))}

  defp answer(:servfail, _transport, query, _records), do: {:reply, encode(query, [], rcode: 2)}
  defp answer(:refused, _transport, query, _records), do: {:reply, encode(query, [], rcode: 5)}

  defp answer({:truncate, _tcp}, :udp, query, _records),
    do: {:reply, encode(query, [], tc: true)}

  defp answer({:truncate, :full}, :tcp, query, records), do: answer(:normal, :tcp, query, records)
  defp answer({:truncate, :dead}, :tcp, _query, _records), do: :close

  defp answer(:wrong_id, _transport, query, records) do
    <<id::16, rest::binary>> = encode(query, srv_records(query, records))
    {:reply, <<bxor(id, 0x5A5A)::16, rest::binary>>}
  end

  defp answer({:records, n}, transport, query, _records) do
    records = for i <- 1..n, do: {1, 1, 10_000 + i, "n#{i}.dc1"}
    bin = encode(query, srv_records(query, records))

    if transport == :udp and byte_size(bin) > payload_size(query),
      do: {:reply, encode(query, [], tc: true)},
      else: {:reply, bin}
  end

  defp answer(:bad_targets, transport, query, records) do
    targets = [
      "bad host.consul",
      "we_b.node.consul",
      "a\\.b.node.consul",
      "wéb.node.consul",
      "-lead.node.consul",
      "."
    ]

    bad = for {target, i} <- Enum.with_index(targets), do: {1, 1, 4810 + i, target}
    answer(:normal, transport, query, records ++ bad)
  end

  defp answer(:edge_ports, transport, query, records) do
    edges = [
      {1, 1, 0, "zero.node.dc1.consul"},
      {1, 1, 1, "one.node.dc1.consul"},
      {1, 1, 65_535, "max.node.dc1.consul"}
    ]

    answer(:normal, transport, query, records ++ edges)
  end

  defp answer(:cname_self, _transport, query, _records) do
    name = query_name(query)
    {:reply, encode(query, [rr(name, :cname, name)])}
  end

  defp answer(:cname_loop, _transport, query, _records) do
    name = query_name(query)

    {a, b} =
      case name do
        ~c"loop-b." ++ rest -> {rest, name}
        _ -> {name, ~c"loop-b." ++ name}
      end

    {:reply, encode(query, [rr(a, :cname, b), rr(b, :cname, a)])}
  end

  defp answer(:cname_chain, _transport, query, _records) do
    case query_name(query) do
      ~c"end." ++ _ -> {:reply, encode(query, [])}
      name -> {:reply, encode(query, [rr(name, :cname, ~c"end." ++ name)])}
    end
  end

  defp answer({:malformed, kind}, _transport, query, _records) do
    <<id::16, _::binary>> = :inet_dns.encode(query)
    {:reply, malformed(kind, id, query)}
  end

  # The right id and response flags, so the resolver tries to parse the rest.
  defp malformed(:garbage, id, _query),
    do: <<id::16, 0x81, 0x80, :binary.copy(<<0xDE, 0xAD, 0xBE, 0xEF>>, 10)::binary>>

  defp malformed(:short, id, _query), do: <<id::16, 0x81, 0x80>>

  # Header: response, NOERROR, 1 question, 5 answers claimed; only the question follows.
  defp malformed(:missing_records, id, query),
    do: <<id::16, 0x81, 0x80, 1::16, 5::16, 0::16, 0::16, question(query)::binary>>

  # One SRV answer whose target starts with a 64-byte label: length byte
  # 0x40, an "extended label" type no resolver accepts (RFC 6891 6.2.4).
  defp malformed(:label_too_long, id, query) do
    target = <<64, :binary.copy("a", 64)::binary, 6, "consul", 0>>

    <<id::16, 0x81, 0x80, 1::16, 1::16, 0::16, 0::16, question(query)::binary,
      srv_rr(target)::binary>>
  end

  # One SRV answer whose target is a compression pointer to itself.
  defp malformed(:pointer_loop, id, query) do
    q = question(query)
    # Offset of the target: header (12) + question + owner (2) + type/class/ttl/rdlength (10)
    # + priority/weight/port (6).
    offset = 12 + byte_size(q) + 2 + 10 + 6
    target = <<0b11::2, offset::14>>

    <<id::16, 0x81, 0x80, 1::16, 1::16, 0::16, 0::16, q::binary, srv_rr(target)::binary>>
  end

  defp question(query) do
    labels =
      query
      |> query_name()
      |> to_string()
      |> String.split(".", trim: true)
      |> Enum.map(&<<byte_size(&1), &1::binary>>)

    IO.iodata_to_binary([labels, 0, <<33::16, 1::16>>])
  end

  # Owner: a pointer to the question's name (offset 12); type SRV, class IN, TTL 0.
  defp srv_rr(target) do
    rdata = <<1::16, 1::16, 4801::16, target::binary>>
    <<0xC0, 12, 33::16, 1::16, 0::32, byte_size(rdata)::16, rdata::binary>>
  end

  defp query_name(query) do
    [q | _] = :inet_dns.msg(query, :qdlist)
    :inet_dns.dns_query(q, :domain)
  end

  defp srv_records(query, records) do
    name = query_name(query)

    for {priority, weight, port, target} <- records,
        do: rr(name, :srv, {priority, weight, port, :binary.bin_to_list(target)})
  end

  defp rr(domain, type, data),
    do: :inet_dns.make_rr(domain: domain, type: type, class: :in, ttl: 0, data: data)

  # The client's EDNS0 payload size, 512 without EDNS (RFC 6891).
  defp payload_size(query) do
    Enum.find_value(:inet_dns.msg(query, :arlist), 512, fn rr ->
      :inet_dns.record_type(rr) == :dns_rr_opt and :inet_dns.rr(rr, :udp_payload_size)
    end)
  end

  defp encode(query, answers, flags \\ []) do
    header = :inet_dns.msg(query, :header)

    header =
      :inet_dns.make_header(
        id: :inet_dns.header(header, :id),
        qr: true,
        opcode: :inet_dns.header(header, :opcode),
        aa: true,
        tc: Keyword.get(flags, :tc, false),
        rd: :inet_dns.header(header, :rd),
        ra: false,
        rcode: Keyword.get(flags, :rcode, 0)
      )

    :inet_dns.encode(
      :inet_dns.make_msg(header: header, qdlist: :inet_dns.msg(query, :qdlist), anlist: answers)
    )
  end
end
