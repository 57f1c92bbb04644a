defmodule Caravan.Epmd.Client do
  @moduledoc """
  The epmd module: derives every node's distribution port from its node name
  (`Caravan.Epmd`), so no epmd daemon is started or asked.

  Select it in `vm.args` (OTP 23+):

      -start_epmd false
      -epmd_module Elixir.Caravan.Epmd.Client

  With these two flags `inet_tcp`, `inet6_tcp` and `inet_tls` distribution
  all listen on the port from the node name. Use `-start_epmd false`, not
  `-no_epmd`: with `-no_epmd` the module is loaded too late and the derived
  port is not used. `-proto_dist Elixir.Caravan.Epmd.Dist` (Caravan 1.x's
  flag) keeps working; see `Caravan.Epmd.Dist_dist`.

  The callbacks are those of OTP's `erl_epmd` (kernel docs, "epmd_module").
  They run at boot, before the file server and Logger exist, so errors are
  written with `:erlang.display_string/1`.

  ## Resolving peer host names

  Peer host names are resolved through Caravan's own resolver, so nodes
  named after Consul names (`app-4370@web1.node.dc1.consul`) connect with
  no `erl_inetrc` and no `/etc/resolv.conf` edits. Configured at boot from
  a vm.args flag or, when the flag is absent, the OS environment:

      ## vm.args
      -caravan_nameservers 127.0.0.1:8600
      -caravan_dns_timeout 1000

      # or the environment
      CARAVAN_NAMESERVERS=127.0.0.1:8600,10.0.0.2:8600
      CARAVAN_DNS_TIMEOUT=1000

  Nameservers are `IP` or `IP:PORT` (`[IPv6]:PORT`), comma-separated; the
  timeout is in ms (default 1000). With no nameservers configured nothing
  changes: hosts resolve with `:inet.getaddr/2` as in plain OTP. Order for
  a host: an IP literal of the asked family is used as it is; then the
  configured nameservers are asked for A (`:inet`) or AAAA (`:inet6`)
  records; when they do not answer with an address, `:inet.getaddr/2`
  tries `/etc/hosts`, any inetrc and the OS resolver. An invalid value
  stops the boot with a message naming it. A `Caravan.Cluster.DnsStrategy`
  topology without `:nameservers` asks these nameservers too
  (`Caravan.DNS.default_nameservers/0`).

  ## Dynamic ports

  `-erl_epmd_port P` (OTP's flag) or `ERL_DIST_PORT=P` sets the port this
  node listens on apart from its name; `-caravan_srv_query Q` /
  `CARAVAN_SRV_QUERY=Q` names the SRV query that gives the port of a peer
  named without one. See the "Dynamic ports" section of the deployment
  guide.
  """

  # Distribution protocol version returned with the port (OTP 23+ speak 6).
  @dist_version 6

  # {name part, port} given to register_node/3, for names/1.
  @registered {__MODULE__, :registered}

  @doc """
  Started by `net_sup` before any application. Loads the NIF library
  (in a release `@on_load` would run too late), reads the boot-time
  resolver configuration (see "Resolving peer host names") and returns
  `:ignore`.

  Returns `{:error, {kind, message}}` when the library cannot be loaded
  (`:native_library`; the message names the library path and the reason)
  or the resolver configuration is invalid (`:invalid_option`), after
  printing the message: the node does not boot.
  """
  @spec start_link() :: :ignore | {:error, Caravan.error()}
  def start_link do
    with :ok <- Caravan.Native.load(),
         :ok <- Caravan.Epmd.BootCheck.flags(),
         :ok <- Caravan.Epmd.HostResolver.configure(),
         :ok <- Caravan.Epmd.Ports.configure() do
      :ignore
    else
      {:error, {_kind, message}} = error ->
        :erlang.display_string(~c"[caravan] " ++ String.to_charlist(message) ++ ~c"\n")
        error
    end
  end

  @doc """
  Called by the distribution module once it listens. There is no daemon to
  tell: it records `{name, port}` for `names/1` and picks the node's
  creation.

  Returns `{:ok, -1}`: `net_kernel` then picks a random 32-bit creation
  (OTP 23+), so a restarted node gets a new creation and pids and
  references of its old incarnation never match new processes. (Caravan
  1.x returned 1..3, which a restart often repeated.)

  `driver` is `inet_tcp`/`inet6_tcp` (OTP 25) or `inet`/`inet6` (OTP 26+).

  Returns `{:error, {kind, message}}`, recording nothing, when `name` is not
  a node name `listen_port_please/2` accepts (see `Caravan.Epmd`) or `port`
  is not an integer in 1..65535; the node then does not start distribution.
  """
  @spec register_node(atom() | charlist(), :inet.port_number(), atom()) ::
          {:ok, -1} | {:error, Caravan.Epmd.error()}
  def register_node(name, port, _driver) when is_integer(port) and port in 1..65_535 do
    with {:ok, expected, _source} <- Caravan.Epmd.Ports.listen_port(name),
         :ok <- Caravan.Epmd.BootCheck.no_epmd(name, port, expected) do
      :persistent_term.put(@registered, {to_charlist(name), port})
      {:ok, -1}
    else
      {:error, {_kind, message}} = error ->
        :erlang.display_string(~c"[caravan] " ++ String.to_charlist(message) ++ ~c"\n")
        error
    end
  end

  def register_node(_name, port, _driver),
    do:
      {:error,
       {:invalid_port,
        "expected the listening port as an integer in 1..65535, got: #{inspect(port)}"}}

  @doc "The /2 form of `register_node/3`, for older callers."
  @spec register_node(atom() | charlist(), :inet.port_number()) ::
          {:ok, -1} | {:error, Caravan.Epmd.error()}
  def register_node(name, port), do: register_node(name, port, :inet_tcp)

  @doc """
  The port this node listens on: `{:ok, port}` from `-erl_epmd_port` (OTP's
  own flag, so it wins) or else the `ERL_DIST_PORT` environment variable,
  saying so in one line at boot; else from its name part (an atom). The
  name's port stays what peers dial. `{:ok, 0}` (any port) for the
  `rem-*`/`rpc-*` helper nodes of release scripts, whatever these say. An
  invalid name or value prints the reason and returns
  `{:error, {kind, message}}`, which stops the node from booting.

  When the port is already taken on the address distribution will listen
  on (`inet_dist_use_interface`, else any address), it prints a message
  naming the port, the node name and the address before returning
  `{:ok, port}`: the listen that follows then fails and the node does not
  boot, and OTP's own report says no more than
  `register/listen error: eaddrinuse`.
  """
  @spec listen_port_please(atom() | charlist(), charlist()) ::
          {:ok, :inet.port_number()} | {:error, Caravan.Epmd.error()}
  def listen_port_please(name, host) do
    case Caravan.Epmd.Ports.listen_port(name) do
      {:ok, 0, :helper} ->
        {:ok, 0}

      {:ok, port, source} ->
        if source != :name,
          do: :erlang.display_string(~c"[caravan] listening on port #{port} from #{source}\n")

        Caravan.Epmd.BootCheck.name_without_port(name, host, port)
        Caravan.Epmd.BootCheck.interface(name, host)
        Caravan.Epmd.BootCheck.port_in_use(name, host, port)
        {:ok, port}

      {:error, {_kind, message}} = error ->
        :erlang.display_string(
          ~c"[caravan] cannot listen: " ++ String.to_charlist(message) ++ ~c"\n"
        )

        error
    end
  end

  @doc """
  The distribution port of a peer at `ip`: `{:port, port, version}`, the
  port found as `address_please/3` finds it, `:noport` when there is none.
  """
  @spec port_please(charlist() | atom(), :inet.ip_address()) ::
          {:port, :inet.port_number(), pos_integer()} | :noport
  def port_please(name, ip) do
    case Caravan.Epmd.Ports.peer_port(name, :inet.ntoa(ip)) do
      {:ok, port, _source} -> {:port, port, @dist_version}
      {:error, _} -> :noport
    end
  end

  @doc "`port_please/2` with a timeout (ms), which is not needed: nothing is asked."
  @spec port_please(charlist() | atom(), :inet.ip_address(), timeout()) ::
          {:port, :inet.port_number(), pos_integer()} | :noport
  def port_please(name, ip, _timeout), do: port_please(name, ip)

  @doc """
  Resolves a peer: `{:ok, ip, port, version}`, the host resolved for
  `family` (`:inet` or `:inet6`) by Caravan's resolver (see "Resolving peer host names"; IP
  literals as they are; the `-caravan_nameservers` when configured; else
  `:inet.getaddr/2`, so `/etc/hosts`, any inetrc and the OS resolver
  apply) and the port: the one the last poll of a `node_port: :srv`
  topology saw for that node (a table read), else the name part's; for a
  name without a port that no poll listed, when `-caravan_srv_query` /
  `CARAVAN_SRV_QUERY` is set, the port of its record in that SRV query's
  answer (asked once per second at most, bounded by the resolver timeout).

  Returns `{:error, reason}` when the host does not resolve or no port is
  found; a node that query does not list is refused with a warning logged
  that names the query (see guides/deployment.md, "Dynamic ports"). On a
  release helper node (`bin/app remote|rpc|pid|stop`) it prints once why
  it cannot reach its node before OTP's `:nodedown`.
  """
  @spec address_please(charlist(), charlist(), :inet | :inet6) ::
          {:ok, :inet.ip_address(), :inet.port_number(), pos_integer()} | {:error, term()}
  def address_please(name, host, family) do
    with {:ok, port, _source} <- Caravan.Epmd.Ports.peer_port(name, host) do
      resolved = Caravan.Epmd.HostResolver.resolve(host, family)
      Caravan.Epmd.Helper.explain(name, host, family, resolved, port)

      with {:ok, ip} <- resolved, do: {:ok, ip, port, @dist_version}
    end
  end

  @doc """
  What `net_adm:names/0,1` shows: `{:ok, [{name, port}]}` with the name part
  and listening port this node registered, `{:ok, []}` before it has. No
  daemon knows the other nodes on the host.
  """
  @spec names(term()) :: {:ok, [{charlist(), :inet.port_number()}]}
  def names(_host \\ nil) do
    case :persistent_term.get(@registered, nil) do
      {name, port} -> {:ok, [{name, port}]}
      nil -> {:ok, []}
    end
  end
end
