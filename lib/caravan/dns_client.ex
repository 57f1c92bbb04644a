defmodule Caravan.DnsClient do
  @moduledoc """
  The behaviour of the `:dns_client` that `Caravan.Cluster.DnsStrategy` asks
  for peers, as in Caravan 1.x. The default is `Caravan.DnsClient.Native`;
  `Caravan.DnsClient.InetRes` is Caravan 1.x's client on OTP's `:inet_res`.

  A client returns `[{port, host}]`: the distribution port and the host part
  of each peer's node name. It may also return `{:ok, [{port, host}]}`, or
  `{:error, reason}` when the answer is unknown (a timeout, a server
  failure): the strategy then keeps the cluster as it is. An empty list
  means "no peers". An entry `{:invalid, message}` stands for a record the
  client could not use; the strategy skips it with a warning.

  `get_nodes/2` is optional; when a client exports it, the strategy passes
  the topology's config (`:nameservers` as `{ip_tuple, port}`, `:timeout`
  in ms, `:node_host`) as `opts`, and `addresses: true`: a peer may then be
  `{port, host, ips}`, `ips` the addresses the answer gave for `host` (an
  SRV answer's additional section). The strategy hands them to the epmd
  module (`Caravan.Cluster.Poll`), so connecting to that node asks DNS
  nothing more. It also passes `early: fun`, a function of one argument to
  call with the peers of an answer that is still being completed (a doubted
  UDP answer, while TCP fetches the whole), which the strategy dials at
  once; a client may ignore it.
  """

  @type peer ::
          {:inet.port_number(), String.t()}
          | {:inet.port_number(), String.t(), [:inet.ip_address()]}
          | {:invalid, String.t()}
  @type result :: [peer()] | {:ok, [peer()]} | {:error, term()}

  @doc "Looks up the peers of `query` (Caravan 1.x's callback)."
  @callback get_nodes(query :: String.t()) :: result()

  @doc "Looks up the peers of `query` with the topology's config."
  @callback get_nodes(query :: String.t(), opts :: keyword()) :: result()

  @optional_callbacks get_nodes: 2

  @doc false
  # The `{:invalid, message}` entry for an SRV target with no IP address
  # under `node_host: :ip`: the one wording of it, for both clients (the
  # native core reports only which target, caravan_core's NoAddress).
  @spec no_address(String.t()) :: {:invalid, String.t()}
  def no_address(target),
    do:
      {:invalid,
       "SRV target #{inspect(target)} has no IP address (node_host: :ip; none in the " <>
         "additional section and it does not resolve)"}
end
