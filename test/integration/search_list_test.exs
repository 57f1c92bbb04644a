defmodule Caravan.Integration.SearchListTest do
  # Short names completed from the search list, as in a Kubernetes pod: a
  # BEAM node in a mount namespace of its own (unshare -m) whose
  # /etc/resolv.conf is a pod's (search default.svc.cluster.local ...,
  # options ndots:5, the nameserver a real dnsmasq serving a headless
  # service's SRV records). OTP reads that resolv.conf at its first lookup; Caravan
  # applies its search list only to those nameservers, and says (in
  # Caravan.diagnose()'s lookup and mix caravan.lookup) which name answered.
  use ExUnit.Case, async: false

  alias Caravan.Test.{Dnsmasq, Loopback}

  @moduletag :integration
  @service "web-headless.default.svc.cluster.local"

  if System.find_executable("unshare") == nil or
       elem(System.cmd("unshare", ["-m", "true"], stderr_to_stdout: true), 1) != 0 do
    @moduletag skip: "needs a mount namespace of its own (unshare -m: util-linux, root)"
  end

  setup do
    ip = Loopback.address()

    dns =
      Dnsmasq.start(
        listen: ip,
        port: 53,
        srv: for(i <- 0..2, do: {@service, "web-#{i}.#{@service}", 4370 + i}),
        extra: ["--local=/cluster.local/"]
      )

    on_exit(fn -> Dnsmasq.stop(dns) end)
    dir = Path.join(System.tmp_dir!(), "caravan-search-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)

    resolv = Path.join(dir, "resolv.conf")

    File.write!(resolv, """
    nameserver #{ip}
    search default.svc.cluster.local svc.cluster.local cluster.local
    options ndots:5
    """)

    %{ip: ip, resolv: resolv}
  end

  # Runs `command` with /etc/resolv.conf being `resolv`; its output.
  defp in_pod(resolv, command) do
    script = "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\""

    case System.cmd("unshare", ["-m", "sh", "-c", script, resolv | command],
           stderr_to_stdout: true
         ) do
      {out, 0} -> out
      {out, status} -> flunk("#{inspect(command)} in the namespace exited with #{status}: #{out}")
    end
  end

  # Runs `code` in a BEAM node whose /etc/resolv.conf is `resolv`.
  defp elixir_in_pod(resolv, code) do
    ebin = Path.join(Mix.Project.build_path(), "lib/caravan/ebin")
    in_pod(resolv, ["elixir", "-pa", ebin, "-e", code])
  end

  test "in a namespace whose resolv.conf has search default.svc.cluster.local, web-headless finds the pods",
       %{ip: ip, resolv: resolv} do
    out =
      elixir_in_pod(resolv, """
      show = fn label, term -> IO.puts(label <> ": " <> inspect(term, width: :infinity)) end
      names = fn -> {:ok, rs} = Caravan.DNS.lookup_srv("web-headless"); Enum.map(rs, & &1.name) end
      # No VM nameservers yet (OTP reads resolv.conf at its first lookup):
      # the system's resolv.conf, read by Caravan.
      show.("system", names.())
      {:ok, records} = Caravan.DNS.lookup_srv("web-headless")
      IO.puts("targets: " <> (records |> Enum.map(& &1.target) |> Enum.sort() |> Enum.join(",")))
      show.("inet_res", elem(:inet_res.getbyname(~c"web-headless", :srv), 0))
      # Now the VM's nameservers and search rule, as :inet_res uses them
      # (OTP keeps its own ndots, 1, whatever resolv.conf's options say).
      show.("vm", Caravan.DNS.VmNameservers.with_search([]))
      show.("names", names.())
      {:ok, config} = Caravan.Cluster.Config.new(query: "web-headless", node_sname: "app")
      show.("diagnose", Caravan.Diagnose.Lookup.run(config, "web-headless"))
      show.("given", Caravan.DNS.lookup_srv("web-headless", nameservers: ["#{ip}"]))
      """)

    names = inspect(List.duplicate(@service, 3))
    assert out =~ "system: #{names}\n"
    assert out =~ "inet_res: :ok"

    {:ok, ip_tuple} = :inet.parse_address(String.to_charlist(ip))
    domains = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert out =~ "vm: #{inspect({[{ip_tuple, 53}], {domains, 1}}, width: :infinity)}\n"

    assert out =~ "names: #{names}\n"

    assert out =~
             "targets: " <> Enum.map_join(0..2, ",", &"web-#{&1}.#{@service}") <> "\n"

    assert out =~ ~s(diagnose: {"web-headless", {:ok, 3, "#{@service}"}, [)
    assert out =~ ~s(:"app-4370@web-0.#{@service}")
    # Nameservers given to Caravan: the name is absolute.
    assert out =~ "given: {:error, {"
    refute out =~ "given: {:ok"

    # The epmd module's nameservers (CARAVAN_NAMESERVERS) are given to Caravan too.
    ebin = Path.join(Mix.Project.build_path(), "lib/caravan/ebin")

    code =
      ~s[IO.puts("epmd: " <> inspect(Caravan.DNS.lookup_srv("web-headless"), width: :infinity))]

    erl = "-pa #{ebin} -start_epmd false -epmd_module Elixir.Caravan.Epmd.Client"
    node = ["--erl", erl, "--name", "app-4390@127.0.0.1", "-e", code]
    out = in_pod(resolv, ["env", "CARAVAN_NAMESERVERS=#{ip}", "elixir" | node])
    assert out =~ "epmd: {:error, {"

    out = in_pod(resolv, ["mix", "caravan.lookup", "web-headless", "--node-sname", "app"])
    assert out =~ "3 records, answered over udp (as #{@service}, from the search list)"
    assert out =~ "app-4371@web-1.#{@service}"
  end
end
