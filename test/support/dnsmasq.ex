defmodule Caravan.Test.Dnsmasq do
  @moduledoc """
  Runs a real dnsmasq (Debian's `dnsmasq-base`) on loopback, serving
  Consul-shaped records: SRV records for services and A records for the
  targets. dnsmasq answers only from its command line (`--no-resolv`,
  `--no-hosts`, `--local=/consul/`), so names it does not know get REFUSED or
  NXDOMAIN and nothing leaves the machine. Records change only by restart.
  """

  alias Caravan.Test.OsProcesses

  @type srv :: {name :: String.t(), target :: String.t(), port :: 1..65_535}
  @type t :: %{
          os_pid: non_neg_integer(),
          port: port(),
          listen: String.t(),
          ip: :inet.ip_address(),
          dns_port: 1..65_535
        }

  @doc """
  Starts dnsmasq and waits (up to 5 s) until it answers.

  Options: `:listen` ("127.0.0.1"), `:port` (8600), `:srv` ([{name, target,
  port}]), `:hosts` ([{name, ip_string}]), `:log_facility` (`"-"`: stderr, or a
  file path), `:extra` (more dnsmasq flags).
  """
  @spec start(keyword()) :: t()
  def start(opts \\ []) do
    listen = Keyword.get(opts, :listen, "127.0.0.1")
    dns_port = Keyword.get(opts, :port, 8600)

    exe =
      System.find_executable("dnsmasq") || Enum.find(["/usr/sbin/dnsmasq"], &File.exists?/1) ||
        raise "dnsmasq is not installed: apt-get install -y dnsmasq-base"

    args =
      [
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--conf-file=/dev/null",
        "--user=#{System.get_env("USER", "root")}",
        "--pid-file=",
        "--listen-address=#{listen}",
        "--bind-interfaces",
        "--port=#{dns_port}",
        "--local=/consul/",
        "--local-ttl=0",
        "--log-facility=#{Keyword.get(opts, :log_facility, "-")}"
      ] ++
        for(
          {name, target, port} <- Keyword.get(opts, :srv, []),
          do: "--srv-host=#{name},#{target},#{port},1,1"
        ) ++
        for({name, ip} <- Keyword.get(opts, :hosts, []), do: "--host-record=#{name},#{ip}") ++
        Keyword.get(opts, :extra, [])

    port =
      Port.open({:spawn_executable, exe}, [:binary, :exit_status, :stderr_to_stdout, args: args])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    {:ok, ip} = :inet.parse_address(String.to_charlist(listen))
    server = %{os_pid: os_pid, port: port, listen: listen, ip: ip, dns_port: dns_port}
    wait_until_answering(server, 50)
    server
  end

  @doc "The nameserver string for Caravan options, e.g. \"127.0.0.1:8600\"."
  def nameserver(%{listen: listen, dns_port: dns_port}), do: "#{listen}:#{dns_port}"

  @doc """
  Stops dnsmasq and waits (up to 5 s) for it to exit; works from any
  process (an `on_exit` callback is not the port's owner) and on a server
  already stopped. Signals the pid only while it is still this dnsmasq
  (`Caravan.Test.OsProcesses.started_here?/2`): once it has exited, the pid
  may belong to another program.
  """
  def stop(%{os_pid: os_pid}) do
    if ours?(os_pid) do
      System.cmd("kill", ["-TERM", to_string(os_pid)], stderr_to_stdout: true)

      if not gone?(os_pid, 50) and ours?(os_pid) do
        System.cmd("kill", ["-KILL", to_string(os_pid)], stderr_to_stdout: true)
        gone?(os_pid, 50)
      end
    end

    :ok
  end

  defp ours?(os_pid), do: OsProcesses.started_here?(os_pid, "dnsmasq")

  # Exited (its sockets closed), not merely untagged: see OsProcesses.running?/1.
  defp gone?(os_pid, tries) do
    cond do
      not OsProcesses.running?(os_pid) -> true
      tries == 0 -> false
      true -> Process.sleep(100) == :ok and gone?(os_pid, tries - 1)
    end
  end

  @doc "Writes an inetrc that resolves host names through this dnsmasq only."
  def inetrc(server, path) do
    File.write!(path, """
    {resolv_conf, ""}.
    {hosts_file, ""}.
    {nameserver, #{inspect(server.ip)}, #{server.dns_port}}.
    {lookup, [dns]}.
    """)

    path
  end

  defp wait_until_answering(server, 0),
    do: raise("dnsmasq on #{nameserver(server)} did not answer within 5 s")

  defp wait_until_answering(%{port: port} = server, tries) do
    receive do
      {^port, {:exit_status, status}} ->
        raise "dnsmasq on #{nameserver(server)} exited with status #{status}: #{output(port)}"
    after
      0 -> :ok
    end

    ns = [nameservers: [{server.ip, server.dns_port}], timeout: 100, retry: 1]

    case :inet_res.resolve(~c"caravan-probe.consul", :in, :a, ns) do
      {:error, :nxdomain} ->
        :ok

      {:error, {:nxdomain, _}} ->
        :ok

      _ ->
        Process.sleep(100)
        wait_until_answering(server, tries - 1)
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
