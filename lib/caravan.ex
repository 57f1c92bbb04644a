defmodule Caravan do
  @moduledoc """
  Caravan clusters BEAM nodes with no epmd daemon, on Nomad, Consul,
  Kubernetes or any cloud with DNS.

    * **Port from name.** A node's distribution port comes from its node
      name: `app-4370@host` listens on 4370 (`Caravan.Epmd`). Every node can
      compute every peer's port, so no port mapper is asked. Delivered as
      the epmd module `Caravan.Epmd.Client` and the proto_dist module
      `Caravan.Epmd.Dist_dist`.
    * **Discovery from DNS SRV.** `Caravan.Cluster.DnsStrategy` (a libcluster
      strategy that also runs on its own) looks up SRV records and connects
      to `:"<node_sname>-<port>@<target>"` for each (`Caravan.DNS`).
    * **A native core.** The port rule and the SRV lookups run in a Rust NIF
      (`native/`), lookups on a tokio runtime off the BEAM schedulers.

  ## vm.args

      -name app-4370@web1.node.dc1.consul
      -start_epmd false
      -epmd_module Elixir.Caravan.Epmd.Client

  Caravan 1.x's flags keep working:

      -proto_dist Elixir.Caravan.Epmd.Dist -start_epmd false -epmd_module Elixir.Caravan.Epmd.Client
  """

  @typedoc """
  Every error kind Caravan returns, in `{:error, {kind, message}}` with
  `message` a sentence naming the value, what was expected and the fix.

  Node names (`Caravan.Epmd`, the port rule in
  `native/caravan_core/src/node_name.rs`): `:empty`, `:too_long`,
  `:empty_name`, `:empty_host`, `:invalid_name`, `:port_out_of_range`,
  `:not_a_node_name`.

  SRV records to node names (`Caravan.Epmd.node_name/3`): `:invalid_host`,
  `:invalid_record`, `:port_mismatch`.

  DNS answers (`Caravan.DNS`): `:nxdomain` and `:nodata` are authoritative
  "no records"; `:timeout`, `:server_failure` (SERVFAIL, REFUSED, ...),
  `:cname_loop` and `:transport` (malformed answers, closed connections)
  mean the answer is unknown.

  Bad arguments and options: `:invalid_query`, `:invalid_nameserver`,
  `:invalid_option` (also a bad strategy config or boot flag).

  The environment: `:config` (the resolver cannot be set up, e.g. an
  unreadable resolv.conf), `:runtime` (Caravan's tokio runtime cannot
  start), `:native_library` (the NIF library cannot be loaded; the message
  names its path), `:internal` (Caravan's native code panicked: a bug).

  A `:dns_client` of the strategy that is not Caravan's own:
  `:dns_client_raised`, `:dns_client_exit`, `:bad_dns_client_result`.
  """
  @type error_kind ::
          :empty
          | :too_long
          | :empty_name
          | :empty_host
          | :invalid_name
          | :port_out_of_range
          | :not_a_node_name
          | :invalid_host
          | :invalid_record
          | :port_mismatch
          | :nxdomain
          | :nodata
          | :timeout
          | :server_failure
          | :cname_loop
          | :transport
          | :invalid_query
          | :invalid_nameserver
          | :invalid_option
          | :config
          | :runtime
          | :native_library
          | :internal
          | :dns_client_raised
          | :dns_client_exit
          | :bad_dns_client_result

  @typedoc "An error: `{kind, message}` (see `t:error_kind/0`)."
  @type error :: {error_kind(), String.t()}
end
