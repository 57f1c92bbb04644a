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
end
