defmodule Caravan.Epmd do
  @moduledoc """
  The port-from-name rule: a node's distribution port is derived from its
  node name, so every node knows every peer's port and no port mapper
  (epmd) is needed.

  The rule, as in Caravan 1.x: the distribution port is the integer just
  left of the `@` in the node name (or at the end of a name without host).
  A name part without trailing digits listens on #{4370}, one above epmd's
  4369. Leading zeros are read as decimal (`app-04370` is 4370).

      iex> Caravan.Epmd.dist_port(:"app-4370@host")
      4370
      iex> Caravan.Epmd.dist_port("app-name3434@example.net")
      3434
      iex> Caravan.Epmd.dist_port(~c"app-name-4834@example.net")
      4834
      iex> Caravan.Epmd.dist_port(:"app@host")
      4370

  The name part must match `^[0-9A-Za-z_-]+$` (what `net_kernel` accepts)
  and the port must be in 1..65535 (TCP). The rule runs natively
  (`native/caravan_core/src/node_name.rs`).
  """

  @typedoc "A node name as an atom, a charlist or a binary."
  @type node_name :: atom() | charlist() | String.t()

  @typedoc """
  Why a node name was refused: `{kind, message}`, the message naming the
  value and what was expected. Kinds: `:empty`, `:too_long`, `:empty_name`,
  `:empty_host`, `:invalid_name`, `:port_out_of_range`, `:not_a_node_name`.
  """
  @type error :: {atom(), String.t()}

  @doc """
  Returns the distribution port (1..65535) of a node name.

  Raises `ArgumentError` with a message naming the value when the node name
  is invalid; use `fetch_dist_port/1` for an `{:error, reason}` instead.

      iex> Caravan.Epmd.dist_port(:"app-9000@10.0.0.1")
      9000
  """
  @spec dist_port(node_name()) :: :inet.port_number()
  def dist_port(node) do
    case fetch_dist_port(node) do
      {:ok, port} -> port
      {:error, {_kind, message}} -> raise ArgumentError, message
    end
  end

  @doc """
  Returns `{:ok, port}` with the distribution port of a node name, or
  `{:error, {kind, message}}` (see `t:error/0`).

      iex> Caravan.Epmd.fetch_dist_port("app-70000@host")
      {:error, {:port_out_of_range, ~s(node name "app-70000@host" ends its name part in 70000, which is not a port in 1..65535)}}
  """
  @spec fetch_dist_port(term()) :: {:ok, :inet.port_number()} | {:error, error()}
  def fetch_dist_port(node), do: Caravan.Native.dist_port(node)

  @doc """
  Returns `{:ok, port}` with the port a node should listen on, or
  `{:error, {kind, message}}`.

  The same as `fetch_dist_port/1`, except for the helper nodes that Elixir
  release scripts start (`rem-<hex>-<node>` for `bin/app remote`,
  `rpc-<hex>-<node>` for `bin/app rpc`): they get port 0, any free port,
  because the port from their name is the port of the node they attach to.

      iex> Caravan.Epmd.listen_port(:"rem-1f2e-app-4370@host")
      {:ok, 0}
      iex> Caravan.Epmd.listen_port(:"app-4370@host")
      {:ok, 4370}
  """
  @spec listen_port(term()) :: {:ok, :inet.port_number()} | {:error, error()}
  def listen_port(node), do: Caravan.Native.listen_port(node)

  @doc """
  The inverse of the port rule: the node name that listens on `port` at
  `host`, `{:ok, :"<sname>-<port>@<host>"}`, as `Caravan.Cluster.DnsStrategy`
  builds it from an SRV record (RFC 2782: port and target). Returns
  `{:error, {kind, message}}` when the result would not be a valid node name
  whose distribution port is `port`, so no atom is made from junk.

  `host` must be an IP literal or a host name (RFC 1123: dot-separated
  labels of letters, digits and inner `-`); anything else, such as `"."`
  (RFC 2782's "no service here"), `_` or escaped bytes, is `:invalid_host`.
  Other kinds: `:invalid_record` (not a string, integer, string),
  `:port_mismatch`, and the kinds of `t:error/0`.

      iex> Caravan.Epmd.node_name("app", 4370, "web1.node.dc1.consul")
      {:ok, :"app-4370@web1.node.dc1.consul"}
      iex> Caravan.Epmd.node_name("app", 0, "web1")
      {:error, {:port_out_of_range, ~s(node name "app-0@web1" ends its name part in 0, which is not a port in 1..65535)}}
  """
  @spec node_name(String.t(), :inet.port_number(), String.t()) ::
          {:ok, node()} | {:error, {atom(), String.t()}}
  def node_name(sname, port, host) do
    with {:ok, name} <- Caravan.Epmd.NodeName.build(sname, port, host),
         do: {:ok, String.to_atom(name)}
  end
end
