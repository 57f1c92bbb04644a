defmodule Caravan.Epmd.Helper do
  @moduledoc false
  # Why a release helper node (`bin/app remote|rpc|pid|stop`) cannot reach
  # the node it attaches to, printed before OTP's `:nodedown`, which says
  # nothing more. Called by the epmd module's address_please/3; prints with
  # :erlang.display_string/1 (standard error), as the boot checks do.

  @doc """
  On a release helper node (`bin/app remote|rpc|pid|stop`: listen port 0,
  `Caravan.Epmd.listen_port/1`), prints once per node why it cannot reach
  the node `name@host` it attaches to, before OTP's `:nodedown`: the host
  does not resolve (naming the nameservers asked and what they answered),
  or nothing accepts TCP on `ip:port` (1 s bound). `resolved` is the epmd
  module's lookup of `host` for `family`. Does nothing on other nodes;
  returns `:ok`.
  """
  @spec explain(
          charlist(),
          charlist(),
          :inet | :inet6,
          {:ok, :inet.ip_address()} | {:error, term()},
          :inet.port_number()
        ) :: :ok
  def explain(name, host, family, resolved, port) do
    key = {__MODULE__, :helper, name, host}

    if node() != :nonode@nohost and Caravan.Epmd.listen_port(node()) == {:ok, 0} and
         not :persistent_term.get(key, false) do
      :persistent_term.put(key, true)
      problem = helper_problem(to_string(host), family, resolved, port)
      if problem, do: warn("cannot reach node #{name}@#{host}: " <> problem)
    end

    :ok
  end

  defp helper_problem(host, family, {:error, reason}, _port) do
    case Caravan.Epmd.HostResolver.nameservers() do
      {nil, []} ->
        "host #{host} does not resolve (#{inspect(reason)}) through the OS resolver, and " <>
          "neither -caravan_nameservers nor CARAVAN_NAMESERVERS is set here (set it as the node has it)"

      {source, parsed} ->
        {_, timeout} = Caravan.Epmd.HostResolver.config()
        opts = [nameservers: parsed, timeout: timeout, trace: false]

        answer =
          case Caravan.DNS.lookup_host(host, family, opts) do
            {:error, {kind, message}} -> "#{kind}: #{message}"
            other -> inspect(other)
          end

        "host #{host} does not resolve: the nameservers from #{source} " <>
          "(#{Caravan.DNS.asked_text(parsed)}) answered #{answer}; the OS resolver " <>
          "answered #{inspect(reason)}. Check #{source} in this shell"
    end
  end

  defp helper_problem(_host, _family, {:ok, ip}, port) do
    case :gen_tcp.connect(ip, port, [], 1_000) do
      {:ok, socket} ->
        :gen_tcp.close(socket)
        nil

      {:error, reason} ->
        "nothing accepts TCP on #{:inet.ntoa(ip)}:#{port} (#{reason}): is the node " <>
          "running, under this name and on that address?"
    end
  end

  defp warn(message),
    do: :erlang.display_string(String.to_charlist("[caravan] " <> message <> "\n"))
end
