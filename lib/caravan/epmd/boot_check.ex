defmodule Caravan.Epmd.BootCheck do
  @moduledoc false
  # Boot-time mistakes (unknown -caravan_* flags, -no_epmd, a name without
  # a port, a port already taken, a malformed inet_dist_use_interface),
  # caught by the epmd module with a message that names the fix. Runs
  # before the file server and Logger exist
  # (DESIGN.md), so it only reads :init arguments and the kernel's
  # environment, and prints with :erlang.display_string/1 (through its
  # callers or warn/1).

  # The -caravan_* flags Caravan reads (Caravan.Epmd.HostResolver, Ports).
  @known_flags ~w(caravan_nameservers caravan_dns_timeout caravan_srv_query)

  @doc """
  Refuses `-caravan_*` arguments Caravan does not know (a typo such as
  `-caravan_nameserver` would otherwise be ignored and the node would
  resolve nothing). Returns `:ok` or `{:error, {:invalid_option, message}}`
  naming the flag and the nearest known one (`String.jaro_distance/2`).
  """
  @spec flags([{atom(), [charlist()]}]) :: :ok | {:error, {:invalid_option, String.t()}}
  def flags(arguments \\ :init.get_arguments()) do
    unknown =
      for {flag, _values} <- arguments,
          name = Atom.to_string(flag),
          String.starts_with?(name, "caravan"),
          name not in @known_flags,
          uniq: true,
          do: name

    case unknown do
      [] ->
        :ok

      names ->
        {:error,
         {:invalid_option,
          Enum.map_join(names, "; ", fn name ->
            "unknown flag -#{name}: did you mean -#{nearest(name, @known_flags)}? " <>
              "Caravan knows #{Enum.map_join(@known_flags, ", ", &("-" <> &1))}"
          end)}}
    end
  end

  @doc """
  The known value nearest to `name` by `String.jaro_distance/2`.
  """
  @spec nearest(String.t(), [String.t(), ...]) :: String.t()
  def nearest(name, known), do: Enum.max_by(known, &String.jaro_distance(name, &1))

  @doc """
  With `-no_epmd`, OTP never starts the epmd module's process (so
  `-caravan_nameservers` is not read) and skips `listen_port_please/2`
  (so the node listens on a random port, not the one from its name).
  Called from `register_node/3` with the port distribution listens on and
  the one the name gives: `{:error, {:no_epmd, message}}` when they differ
  under `-no_epmd`, naming the fix. A helper node (expected port 0) gets
  its resolver configured here instead and `:ok`.
  """
  @spec no_epmd(atom() | charlist(), :inet.port_number(), :inet.port_number()) ::
          :ok | {:error, {:no_epmd, String.t()}}
  def no_epmd(name, port, expected) do
    case :init.get_argument(:no_epmd) do
      {:ok, _} when expected != 0 and port != expected ->
        {:error,
         {:no_epmd,
          "-no_epmd is set together with -epmd_module Elixir.Caravan.Epmd.Client: OTP " <>
            "then never starts the epmd module, so node #{name} listens on port #{port}, " <>
            "not #{expected} from its name, and -caravan_nameservers is not read. " <>
            "Replace -no_epmd with -start_epmd false (a -proto_dist inet_tcp added only " <>
            "for -no_epmd can go too)."}}

      {:ok, _} ->
        # start_link/0 never ran: read the resolver config now.
        _ = Caravan.Epmd.HostResolver.configure()
        :ok

      :error ->
        :ok
    end
  end

  @doc """
  Warns (does not stop the boot) when the node name has no port in its
  name part (`app@host`, listening on #{4370}) while a
  `Caravan.Cluster.DnsStrategy` SRV topology is configured
  (`config :libcluster, :topologies`, loaded before the kernel starts in a
  release): its peers dial `<node_sname>-<port>@<host>`, a name this node
  does not have. A/AAAA topologies (`record_type: :a`) name nodes
  `<basename>@<ip>`, so no warning then; outside a release the strategy
  warns when it starts instead.
  """
  @spec name_without_port(atom() | charlist(), charlist(), :inet.port_number()) :: :ok
  def name_without_port(name, host, port) do
    topologies =
      case :application.get_env(:libcluster, :topologies) do
        {:ok, topologies} -> topologies
        :undefined -> []
      end

    case name_without_port_message(name, host, port, topologies) do
      nil -> :ok
      message -> warn(message)
    end
  end

  @doc """
  The warning of `name_without_port/3` for libcluster `topologies`, or nil.
  `name` is the name part (text before any `@` is used).
  """
  @spec name_without_port_message(atom() | charlist(), charlist(), :inet.port_number(), term()) ::
          String.t() | nil
  def name_without_port_message(name, host, port, topologies) do
    name = name |> to_string() |> String.split("@") |> hd()

    with false <- name == "" or String.last(name) in ~w(0 1 2 3 4 5 6 7 8 9),
         [sname | _] <- srv_snames(topologies) do
      "node name #{name}@#{host} has no port in its name part: it listens on #{port}, " <>
        "but Caravan.Cluster.DnsStrategy's peers dial <node_sname>-<port>@<host> " <>
        "(#{sname}-#{port}@#{host}) and will not reach it. Name the node " <>
        "#{sname}-#{port}@#{host} (RELEASE_NODE in rel/env.sh.eex)."
    else
      _ -> nil
    end
  end

  # The node_sname of each Caravan SRV topology in libcluster's config.
  defp srv_snames(topologies) when is_list(topologies) do
    for {_name, topology} <- topologies,
        Keyword.keyword?(topology),
        topology[:strategy] == Caravan.Cluster.DnsStrategy,
        config = Keyword.get(topology, :config, []),
        Keyword.keyword?(config),
        Keyword.get(config, :record_type, :srv) == :srv,
        Keyword.get(config, :node_port, :name) == :name,
        is_binary(config[:node_sname]),
        do: config[:node_sname]
  end

  defp srv_snames(_topologies), do: []

  @doc """
  Prints why the boot will fail when `port` (the port of node name
  `name@host`) is already taken on the address distribution listens on
  (`inet_dist_use_interface`, else any address): another process, or a
  node with the same name still running. A probe listen, opened and
  closed at once; it changes nothing, the distribution's own listen
  decides. Returns `:ok`.
  """
  @spec port_in_use(atom() | charlist(), charlist(), :inet.port_number()) :: :ok
  def port_in_use(name, host, port) do
    with {family, ip} when family in [:inet, :inet6] <- listen_address(),
         {:error, :eaddrinuse} <- probe_listen(port, family, ip) do
      :erlang.display_string(
        ~c"[caravan] cannot listen: port #{port} on #{:inet.ntoa(ip)}, the port of node " ++
          ~c"name #{name}@#{host}, is already in use (eaddrinuse): another process, or a " ++
          ~c"node with the same name, holds it. Stop it or choose another port in the " ++
          ~c"node name." ++ several_nodes_hint(ip, host) ++ ~c"\n"
      )
    end

    :ok
  end

  defp probe_listen(port, family, ip) do
    with {:ok, socket} <- :gen_tcp.listen(port, [family, ip: ip, reuseaddr: true]),
         do: :gen_tcp.close(socket)
  end

  # Nodes on one host that share a port need an address each: this node's.
  defp several_nodes_hint(ip, host) when ip in [{0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0}] do
    ~c" Several nodes on one host with the same port each need their own address: add " ++
      ~c"-kernel inet_dist_use_interface '#{own_ip(host, ip)}' (the address of #{host}) to " ++
      ~c"vm.args (in ELIXIR_ERL_OPTIONS or ERL_FLAGS without the quotes)."
  end

  defp several_nodes_hint(_ip, _host), do: []

  # This node's address as an Erlang tuple, from its host name.
  defp own_ip(host, any) do
    family = if tuple_size(any) == 4, do: :inet, else: :inet6

    case Caravan.Epmd.HostResolver.resolve(host, family) do
      {:ok, ip} -> :io_lib.format(~c"~w", [ip])
      _ -> if family == :inet, do: ~c"{A,B,C,D}", else: ~c"{A,B,C,D,E,F,G,H}"
    end
  end

  @doc """
  Prints why the boot will fail when the kernel's `inet_dist_use_interface`
  is set but is not an IP address tuple (a quoted `'{127,0,0,4}'` in
  `ELIXIR_ERL_OPTIONS`, where quotes are not stripped, is an atom), with
  the form each place needs; OTP's own report says no more than
  `register/listen error: badarg`. Returns `:ok` (also when it is fine).
  """
  @spec interface(atom() | charlist(), charlist()) :: :ok
  def interface(name, host) do
    _ =
      case listen_address() do
        {:malformed, value} ->
          ip = own_ip(host, {0, 0, 0, 0})

          :erlang.display_string(
            String.to_charlist(
              "[caravan] cannot listen: -kernel inet_dist_use_interface is malformed: " <>
                "#{inspect(value)} " <>
                "is not an IP address tuple, so node #{name}@#{host} cannot listen. Write the " <>
                "tuple: in vm.args -kernel inet_dist_use_interface '#{ip}' (its reader strips " <>
                "the quotes); in ELIXIR_ERL_OPTIONS, ERL_FLAGS or ERL_AFLAGS -kernel " <>
                "inet_dist_use_interface #{ip} (no quotes: nothing strips them there); on a " <>
                "shell command line erl -kernel inet_dist_use_interface '#{ip}'\n"
            )
          )

        _ ->
          true
      end

    :ok
  end

  # The address and family of the distribution listen socket: the kernel's
  # inet_dist_use_interface, else any address, IPv6 when -proto_dist names
  # an inet6_* module (inet6_tcp, inet6_tls); `{:malformed, value}` for a
  # value that is not an address.
  defp listen_address do
    case :application.get_env(:kernel, :inet_dist_use_interface) do
      {:ok, {_, _, _, _} = ip} ->
        {:inet, ip}

      {:ok, {_, _, _, _, _, _, _, _} = ip} ->
        {:inet6, ip}

      {:ok, value} ->
        {:malformed, value}

      :undefined ->
        inet6? =
          case :init.get_argument(:proto_dist) do
            {:ok, protos} ->
              :lists.any(&:lists.prefix(~c"inet6", &1), :lists.append(protos))

            :error ->
              false
          end

        if inet6?, do: {:inet6, {0, 0, 0, 0, 0, 0, 0, 0}}, else: {:inet, {0, 0, 0, 0}}
    end
  end

  defp warn(message),
    do: :erlang.display_string(String.to_charlist("[caravan] warning: " <> message <> "\n"))
end
