defmodule Caravan.Test.Unbound do
  @moduledoc """
  Runs a real unbound (Debian's `unbound`) on loopback as the host resolver
  that forwards `.consul` to a Consul agent, configured as Consul's guide
  "Forward DNS for Consul service discovery" says (a `stub-zone` for
  `consul` with `do-not-query-localhost: no` and `domain-insecure`), or with
  `stub-tcp-upstream: yes` (`tcp_upstream: true`), which asks the agent
  over TCP. Nothing is cached (Consul's TTL is 0 and no validator runs);
  names outside `.consul` are refused, so nothing leaves the machine.
  """

  alias Caravan.Test.OsProcesses

  @type t :: %{
          os_pid: non_neg_integer(),
          port: port(),
          ip: :inet.ip_address(),
          dns_port: 1..65_535,
          dir: String.t()
        }

  @doc "The unbound executable, or nil when it is not installed."
  @spec executable() :: String.t() | nil
  def executable,
    do: System.find_executable("unbound") || Enum.find(["/usr/sbin/unbound"], &File.exists?/1)

  @doc """
  Starts unbound in front of the agent at `upstream` (`"IP:PORT"`) and
  waits (up to 5 s) until it answers. Options: `:ip` (the listening
  address, a tuple), `:port` (53), `:tcp_upstream` (false).
  """
  @spec start(String.t(), keyword()) :: t()
  def start(upstream, opts) do
    exe = executable() || raise "unbound is not installed: apt-get install -y unbound"
    ip = Keyword.fetch!(opts, :ip)
    dns_port = Keyword.get(opts, :port, 53)
    [agent_ip, agent_port] = String.split(upstream, ":")
    dir = Path.join(System.tmp_dir!(), "caravan-unbound-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    conf = Path.join(dir, "unbound.conf")

    File.write!(conf, """
    server:
      interface: #{:inet.ntoa(ip)}@#{dns_port}
      access-control: 127.0.0.0/8 allow
      username: ""
      chroot: ""
      directory: "#{dir}"
      pidfile: ""
      use-syslog: no
      logfile: ""
      verbosity: 0
      num-threads: 1
      module-config: "iterator"
      do-not-query-localhost: no
      domain-insecure: "consul"

    stub-zone:
      name: "consul"
      stub-addr: #{agent_ip}@#{agent_port}
    #{if Keyword.get(opts, :tcp_upstream, false), do: "  stub-tcp-upstream: yes", else: ""}
    """)

    port =
      Port.open({:spawn_executable, exe}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ["-d", "-c", conf]
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    server = %{os_pid: os_pid, port: port, ip: ip, dns_port: dns_port, dir: dir}
    wait_until_answering(server, 50)
    server
  end

  @doc "The nameserver string for Caravan options, e.g. \"127.100.0.9:53\"."
  @spec nameserver(t()) :: String.t()
  def nameserver(%{ip: ip, dns_port: dns_port}), do: "#{:inet.ntoa(ip)}:#{dns_port}"

  @doc """
  Stops unbound (only while the pid is still this unbound) and waits (up
  to 5 s) for it to exit; removes its directory. Works from any process.
  """
  @spec stop(t()) :: :ok
  def stop(%{os_pid: os_pid, dir: dir}) do
    if ours?(os_pid) do
      System.cmd("kill", ["-TERM", to_string(os_pid)], stderr_to_stdout: true)

      if not gone?(os_pid, 50) and ours?(os_pid) do
        System.cmd("kill", ["-KILL", to_string(os_pid)], stderr_to_stdout: true)
        gone?(os_pid, 50)
      end
    end

    File.rm_rf!(dir)
    :ok
  end

  defp ours?(os_pid), do: OsProcesses.started_here?(os_pid, "unbound")

  defp gone?(os_pid, tries) do
    cond do
      not OsProcesses.running?(os_pid) -> true
      tries == 0 -> false
      true -> Process.sleep(100) == :ok and gone?(os_pid, tries - 1)
    end
  end

  # unbound answers every name once it listens (REFUSED, NXDOMAIN...).
  defp wait_until_answering(server, 0),
    do: raise("unbound on #{nameserver(server)} did not answer within 5 s")

  defp wait_until_answering(%{port: port} = server, tries) do
    receive do
      {^port, {:exit_status, status}} ->
        raise "unbound on #{nameserver(server)} exited with status #{status}: #{output(port)}"
    after
      0 -> :ok
    end

    ns = [nameservers: [{server.ip, server.dns_port}], timeout: 100, retry: 1]

    case :inet_res.resolve(~c"caravan-probe.invalid", :in, :a, ns) do
      {:error, reason} when reason in [:timeout, :econnrefused] ->
        Process.sleep(100)
        wait_until_answering(server, tries - 1)

      _answered ->
        :ok
    end
  end

  defp output(port) do
    receive do
      {^port, {:data, data}} -> data <> output(port)
    after
      0 -> ""
    end
  end
end
