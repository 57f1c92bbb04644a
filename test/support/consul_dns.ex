defmodule Caravan.Test.ConsulDns do
  @moduledoc """
  A stand-in for Consul's DNS interface (Consul itself cannot be installed
  here), written from Consul's `agent/dns.go` (`trimUDPResponse`,
  `trimTCPResponse`, `dnsBinaryTruncate`, `serviceSRVRecords`, `setEDNS`)
  with Consul's defaults (`udp_answer_limit = 3`, `enable_truncate = false`,
  `node_meta_txt = true`, TTL 0). It is as hostile as the real thing:

    * UDP, no EDNS0 in the query (or an EDNS0 size of 512 or less): the
      answer is cut to 3 SRV records, **TC not set**;
    * UDP with EDNS0: SRV records (each with its additional records) are
      dropped until the message fits the advertised payload size, **TC not
      set**; the reply carries an OPT record echoing the size (Consul adds
      it after trimming);
    * TCP: every record, up to a 65,523-byte message (Consul's
      `trimTCPResponse` bound);
    * each SRV record comes with one A or AAAA record for its target and one
      TXT record (node meta) in the additional section; TTL 0; the answer is
      shuffled on every query, so each trimmed answer is another subset.

  Names answered (any case, with or without the datacenter label):
  `<svc>.service[.<dc>].consul` and `_<svc>._tcp.service[.<dc>].consul`
  (SRV), `<node>.node[.<dc>].consul` and `<hex>.addr[.<dc>].consul` (A,
  AAAA). Anything else is NXDOMAIN.

  Built on OTP's `:inet_dns` like `Caravan.Test.FaultDns`; listens on UDP
  and TCP on the same port. The instance set can be changed while it runs
  (`set_instances/2`).
  """
  use GenServer

  import Bitwise

  alias Caravan.Test.DnsSockets

  # Consul's trimTCPResponse: "64k - 12 bytes DNS raw overhead".
  @tcp_max 65_523
  # Consul's defaultMaxUDPSize and default udp_answer_limit.
  @udp_default_max 512
  @udp_answer_limit 3

  @typedoc "One registered instance: the node's name, address and the service's port."
  @type instance :: %{node: String.t(), ip: :inet.ip_address(), port: :inet.port_number()}

  @doc """
  Starts the server. Options:

    * `:port` (required): the UDP and TCP port;
    * `:ip` (`{127, 0, 3, 1}`): the listening address;
    * `:service` (`"web"`), `:dc` (`"dc1"`);
    * `:instances`: a count (1 to 500: nodes `node1..nodeN`, addresses
      `10.0.x.y` or `fd00::x` with `family: :inet6`, ports `20001..`), or a
      list of `t:instance/0`;
    * `:target` (`:node`): SRV targets as `<node>.node.<dc>.consul` or
      (`:addr`) `<hex-ip>.addr.<dc>.consul`;
    * `:family` (`:inet`): addresses generated for a count.
  """
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc "The nameserver string for Caravan options, e.g. `\"127.0.3.1:8600\"`."
  def nameserver(server), do: GenServer.call(server, :nameserver)

  @doc "Replaces the registered instances (a count or a list, as in `start_link/1`)."
  def set_instances(server, instances), do: GenServer.call(server, {:set_instances, instances})

  @doc "The registered instances."
  def instances(server), do: GenServer.call(server, :instances)

  @doc "How many queries arrived: `%{udp: n, tcp: m}`."
  def queries(server), do: GenServer.call(server, :queries)

  @doc """
  The node-name host Caravan derives for `instance` under `node_host:
  :auto` in `dc`: the IP of an `.addr.` target, else the target.
  """
  def expected_host(instance, form, dc \\ "dc1")
  def expected_host(%{ip: ip}, :addr, _dc), do: to_string(:inet.ntoa(ip))
  def expected_host(instance, :node, dc), do: target(instance, :node, dc)

  @doc "The SRV target of `instance` for `target_form` (`:node` or `:addr`) in `dc`."
  def target(%{node: node}, :node, dc), do: "#{node}.node.#{dc}.consul"
  def target(%{ip: ip}, :addr, dc), do: "#{hex(ip)}.addr.#{dc}.consul"

  @doc "Generates `n` instances (see `start_link/1`)."
  def generate(n, family \\ :inet) when n in 1..65_535 do
    for i <- 1..n do
      ip =
        case family do
          :inet -> {10, 0, i >>> 8, i &&& 255}
          :inet6 -> {0xFD00, 0, 0, 0, 0, 0, 0, i}
        end

      %{node: "node#{i}", ip: ip, port: 20_000 + i}
    end
  end

  # -- server ----------------------------------------------------------------

  @impl true
  def init(opts) do
    ip = Keyword.get(opts, :ip, {127, 0, 3, 1})
    port = Keyword.fetch!(opts, :port)
    family = Keyword.get(opts, :family, :inet)

    # Consul (miekg/dns) serves several queries per TCP connection and
    # closes one idle for 10 s.
    sockets = DnsSockets.open(ip, port, [backlog: 128], 10_000)

    {:ok,
     %{
       ip: ip,
       port: port,
       sockets: sockets,
       service: Keyword.get(opts, :service, "web"),
       dc: Keyword.get(opts, :dc, "dc1"),
       target: Keyword.get(opts, :target, :node),
       family: family,
       instances: instances(Keyword.get(opts, :instances, 3), family),
       queries: %{udp: 0, tcp: 0}
     }}
  end

  defp instances(n, family) when is_integer(n), do: generate(n, family)
  defp instances(list, _family) when is_list(list), do: list

  @impl true
  def handle_call(:nameserver, _from, state),
    do: {:reply, "#{:inet.ntoa(state.ip)}:#{state.port}", state}

  def handle_call({:set_instances, instances}, _from, state),
    do: {:reply, :ok, %{state | instances: instances(instances, state.family)}}

  def handle_call(:instances, _from, state), do: {:reply, state.instances, state}
  def handle_call(:queries, _from, state), do: {:reply, state.queries, state}

  def handle_call({:answer, :tcp, packet}, _from, state) do
    state = count(state, :tcp)

    case respond(packet, :tcp, state) do
      {:reply, _bin} = reply -> {:reply, reply, state}
      :drop -> {:reply, :close, state}
    end
  end

  @impl true
  def handle_info({:udp, udp, ip, port, packet}, %{sockets: %{udp: udp}} = state) do
    state = count(state, :udp)
    DnsSockets.reply_udp(state.sockets, ip, port, respond(packet, :udp, state))
    {:noreply, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state), do: DnsSockets.close(state.sockets)

  defp count(state, transport),
    do: %{state | queries: Map.update!(state.queries, transport, &(&1 + 1))}

  # -- answers ---------------------------------------------------------------

  defp respond(packet, transport, state) do
    case :inet_dns.decode(packet) do
      {:ok, query} -> {:reply, answer(query, transport, state)}
      {:error, _} -> :drop
    end
  end

  defp answer(query, transport, state) do
    [q | _] = :inet_dns.msg(query, :qdlist)
    name = :inet_dns.dns_query(q, :domain)
    type = :inet_dns.dns_query(q, :type)
    edns = edns_size(query)

    case {classify(name, state), type} do
      {:service, :srv} ->
        groups = state.instances |> Enum.shuffle() |> Enum.map(&group(&1, name, state))
        kept = trim(query, groups, transport, edns)
        encode(query, kept, edns)

      {{:host, ip}, type} when type in [:a, :aaaa] ->
        answers = if type == family_type(ip), do: [rr(name, type, ip)], else: []

        encode(query, [{answers, []}], edns)

      {:service, _other} ->
        encode(query, [], edns)

      {{:host, _ip}, _other} ->
        encode(query, [], edns)

      {:unknown, _type} ->
        encode(query, [], edns, rcode: 3)
    end
  end

  # One SRV answer and its additional A/AAAA + TXT (node meta) records.
  defp group(instance, qname, state) do
    target = target(instance, state.target, state.dc) |> String.to_charlist()
    srv = rr(qname, :srv, {1, 1, instance.port, target})
    address = rr(target, family_type(instance.ip), instance.ip)
    meta = rr(target, :txt, [~c"consul-network-segment="])
    {[srv], [address, meta]}
  end

  # Consul's trimDNSResponse with enable_truncate = false: TC is never set.
  defp trim(query, groups, :tcp, _edns), do: fit(query, groups, @tcp_max)

  defp trim(query, groups, :udp, edns) do
    max_size = if edns && edns > @udp_default_max, do: edns, else: @udp_default_max

    groups =
      if max_size == @udp_default_max, do: Enum.take(groups, @udp_answer_limit), else: groups

    fit(query, groups, max_size)
  end

  # The most groups (at least one) whose message, without the OPT record
  # (Consul appends it after trimming), is at most max_size bytes: a binary
  # search, as Consul's dnsBinaryTruncate.
  defp fit(query, groups, max_size) do
    if groups == [] or size(query, groups) <= max_size do
      groups
    else
      Enum.take(groups, search(query, groups, max_size, 1, length(groups)))
    end
  end

  defp search(_query, _groups, _max, low, high) when low >= high, do: low

  defp search(query, groups, max, low, high) do
    mid = div(low + high + 1, 2)

    if size(query, Enum.take(groups, mid)) <= max,
      do: search(query, groups, max, mid, high),
      else: search(query, groups, max, low, mid - 1)
  end

  defp size(query, groups), do: byte_size(encode(query, groups, nil))

  defp split(groups) do
    {Enum.flat_map(groups, &elem(&1, 0)), Enum.flat_map(groups, &elem(&1, 1))}
  end

  defp classify(name, state) do
    labels = name |> to_string() |> String.downcase() |> String.split(".", trim: true)
    svc = String.downcase(state.service)
    dc = String.downcase(state.dc)

    case labels do
      [^svc, "service", "consul"] -> :service
      [^svc, "service", ^dc, "consul"] -> :service
      ["_" <> ^svc, "_tcp", "service", "consul"] -> :service
      ["_" <> ^svc, "_tcp", "service", ^dc, "consul"] -> :service
      [node, "node", "consul"] -> node_ip(node, state)
      [node, "node", ^dc, "consul"] -> node_ip(node, state)
      [hex, "addr", "consul"] -> addr_ip(hex)
      [hex, "addr", ^dc, "consul"] -> addr_ip(hex)
      _ -> :unknown
    end
  end

  defp node_ip(node, state) do
    case Enum.find(state.instances, &(String.downcase(&1.node) == node)) do
      nil -> :unknown
      instance -> {:host, instance.ip}
    end
  end

  defp addr_ip(hex) do
    case Base.decode16(hex, case: :mixed) do
      {:ok, <<a, b, c, d>>} -> {:host, {a, b, c, d}}
      {:ok, <<_::128>> = bin} -> {:host, List.to_tuple(for <<s::16 <- bin>>, do: s)}
      _ -> :unknown
    end
  end

  defp hex(ip) when tuple_size(ip) == 4,
    do: ip |> Tuple.to_list() |> :binary.list_to_bin() |> Base.encode16(case: :lower)

  defp hex(ip) when tuple_size(ip) == 8,
    do: for(s <- Tuple.to_list(ip), into: <<>>, do: <<s::16>>) |> Base.encode16(case: :lower)

  defp family_type(ip) when tuple_size(ip) == 4, do: :a
  defp family_type(ip) when tuple_size(ip) == 8, do: :aaaa

  defp rr(domain, type, data),
    do: :inet_dns.make_rr(domain: domain, type: type, class: :in, ttl: 0, data: data)

  # The client's EDNS0 payload size, nil without an OPT record.
  defp edns_size(query) do
    Enum.find_value(:inet_dns.msg(query, :arlist), fn rr ->
      :inet_dns.record_type(rr) == :rr and :inet_dns.rr(rr, :type) == :opt and
        :inet_dns.rr(rr, :udp_payload_size)
    end)
  end

  defp encode(query, groups, edns, flags \\ []) do
    header = :inet_dns.msg(query, :header)

    header =
      :inet_dns.make_header(
        id: :inet_dns.header(header, :id),
        qr: true,
        opcode: :inet_dns.header(header, :opcode),
        aa: true,
        tc: false,
        rd: :inet_dns.header(header, :rd),
        ra: false,
        rcode: Keyword.get(flags, :rcode, 0)
      )

    {an, ar} = split(groups)
    opt = if edns, do: [:inet_dns.make_rr(type: :opt, udp_payload_size: edns)], else: []

    :inet_dns.encode(
      :inet_dns.make_msg(
        header: header,
        qdlist: :inet_dns.msg(query, :qdlist),
        anlist: an,
        arlist: ar ++ opt
      )
    )
  end
end
