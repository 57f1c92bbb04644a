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
      (`native/`); a lookup never blocks a BEAM scheduler (its first UDP
      reply is watched by the BEAM's own poll set, the rest runs on a tokio
      runtime).

  ## Release setup

      # rel/env.sh.eex (sourced for the node and the helper nodes of
      # bin/app remote|rpc|stop|pid)
      export RELEASE_DISTRIBUTION=name
      export RELEASE_NODE=app-4370@web1.node.dc1.consul
      export CARAVAN_NAMESERVERS=127.0.0.1:8600

      # rel/vm.args.eex and rel/remote.vm.args.eex
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
  `:invalid_option` (also a bad strategy config or boot flag);
  `:invalid_config` (the reason a topology with a bad config stops with).

  Distribution at boot (`Caravan.Epmd.Client`): `:invalid_port` (OTP
  handed over a listen port outside 1..65535), `:no_epmd` (`-no_epmd`
  made OTP listen on a random port instead of the one the name gives).

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
          | :invalid_config
          | :invalid_port
          | :no_epmd
          | :config
          | :runtime
          | :native_library
          | :internal
          | :dns_client_raised
          | :dns_client_exit
          | :bad_dns_client_result

  @typedoc "An error: `{kind, message}` (see `t:error_kind/0`)."
  @type error :: {error_kind(), String.t()}

  @doc """
  Prints, and returns, a plain-text report of why this node's cluster does
  or does not form, for a person to read or paste into an issue. From a
  running release:

      bin/app rpc 'Caravan.diagnose()'

  and in development `mix caravan.doctor`.

  The report has: this node's name, distribution port, listen address,
  creation, epmd module and the Caravan flags in force; the nameservers
  the epmd module resolves peers' hosts with and where they came from
  (`-caravan_nameservers`, `CARAVAN_NAMESERVERS`, none); for each topology
  (the `Caravan.Cluster.DnsStrategy` processes running here, else the
  Caravan topologies of `config :libcluster, :topologies`) its query and
  a lookup made now, and for every node DNS lists whether its host
  resolves, whether its port accepts TCP and whether it is connected; then
  a verdict: each problem found with its next step.

  It never prints the cookie or TLS key material (only whitelisted flags
  are shown). Every network step is bounded: host lookups by the
  resolver's timeout, TCP probes by `:tcp_timeout`, the probe of one
  node by 5000 ms; probes run in parallel.

  Options: `:topologies` (a list of topology configs, keyword lists as
  the strategy takes, instead of the running ones), `:tcp_timeout` (ms,
  default 1000), `:outside` (default `false`; `true` from a VM that is
  not a member, as `mix caravan.doctor`: connections are not judged),
  `:print` (default `true`).

  Returns `:ok` after printing the report (so an IEx remote shell shows it
  once), or the report as a string with `print: false`.
  """
  @spec diagnose(keyword()) :: :ok | String.t()
  def diagnose(opts \\ []) do
    report = Caravan.Diagnose.report(opts)

    if Keyword.get(opts, :print, true) do
      IO.write(report)
      :ok
    else
      report
    end
  end
end
