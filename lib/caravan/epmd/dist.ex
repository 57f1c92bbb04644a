defmodule Caravan.Epmd.Dist_dist do
  @moduledoc """
  The `-proto_dist` module of Caravan 1.x, kept so its flags work unchanged:

      -proto_dist Elixir.Caravan.Epmd.Dist
      -start_epmd false
      -epmd_module Elixir.Caravan.Epmd.Client

  `-proto_dist X` makes `net_kernel` load the module `X_dist`, hence this
  module's name. Since OTP 23, OTP's `inet_tcp_dist` asks the epmd module
  for its listen port (`Caravan.Epmd.Client.listen_port_please/2`), so every
  callback here delegates to `:inet_tcp_dist` (IPv4 TCP). New setups need
  only `-epmd_module`, and can use `-proto_dist inet6_tcp` or
  `-proto_dist inet_tls` with it.
  """

  @doc "See `:inet_tcp_dist`. Listens on the port from the node name."
  defdelegate listen(name, host), to: :inet_tcp_dist
  @doc "See `:inet_tcp_dist`."
  defdelegate listen(name), to: :inet_tcp_dist
  @doc "See `:inet_tcp_dist`."
  defdelegate accept(listen), to: :inet_tcp_dist
  @doc "See `:inet_tcp_dist`."
  defdelegate accept_connection(accept_pid, socket, my_node, allowed, setup_time),
    to: :inet_tcp_dist

  @doc "See `:inet_tcp_dist`. Resolves the peer through `Caravan.Epmd.Client`."
  defdelegate setup(node, type, my_node, long_or_short_names, setup_time), to: :inet_tcp_dist
  @doc "See `:inet_tcp_dist`."
  defdelegate close(listen), to: :inet_tcp_dist
  @doc "See `:inet_tcp_dist`."
  defdelegate select(node), to: :inet_tcp_dist
  @doc "See `:inet_tcp_dist`."
  defdelegate address(), to: :inet_tcp_dist
  @doc "See `:inet_tcp_dist`."
  defdelegate is_node_name(node), to: :inet_tcp_dist
  @doc "See `:inet_tcp_dist`."
  defdelegate setopts(listen, opts), to: :inet_tcp_dist
  @doc "See `:inet_tcp_dist`."
  defdelegate getopts(listen, opts), to: :inet_tcp_dist
end
