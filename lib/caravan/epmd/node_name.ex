defmodule Caravan.Epmd.NodeName do
  @moduledoc false
  # The inverse of the port rule (Caravan.Epmd): the node name string
  # "<sname>-<port>@<host>" for an SRV record, checked so that it is a valid
  # node name whose distribution port is `port`, without making an atom.
  # Caravan.Epmd.node_name/3 is the public, documented entry point.

  @host_label ~r/\A[0-9A-Za-z](?:[0-9A-Za-z-]{0,61}[0-9A-Za-z])?\z/

  @doc """
  `{:ok, "<sname>-<port>@<host>"}`, or `{:error, {kind, message}}` with
  kind `:invalid_host`, `:invalid_record`, `:port_mismatch` or a kind of
  `t:Caravan.Epmd.error/0`. Makes no atom.
  """
  @spec build(String.t(), :inet.port_number(), String.t()) ::
          {:ok, String.t()} | {:error, {atom(), String.t()}}
  def build(sname, port, host) when is_binary(sname) and is_integer(port) and is_binary(host) do
    name = "#{sname}-#{port}@#{host}"

    if valid_host?(host) do
      case Caravan.Epmd.fetch_dist_port(name) do
        {:ok, ^port} ->
          {:ok, name}

        {:ok, other} ->
          {:error, {:port_mismatch, "#{name} would listen on #{other}, not #{port}"}}

        {:error, _} = error ->
          error
      end
    else
      invalid_host(host)
    end
  end

  def build(sname, port, host),
    do:
      {:error,
       {:invalid_record, "expected a port and a host, got: #{inspect({sname, port, host})}"}}

  @doc """
  A sentence naming both ports when `found` (node atoms, a poll's) leaves
  out `self` but lists a node of its name part and host with another port
  (an SRV record whose port does not match the node's name); nil
  otherwise, and on a node that is not distributed.
  """
  @spec other_port(node(), [node()]) :: String.t() | nil
  def other_port(self, found) do
    with false <- self in found,
         {:ok, own} <- Caravan.Epmd.fetch_dist_port(self),
         [name, host] <- String.split(Atom.to_string(self), "@", parts: 2) do
      base = String.replace(name, ~r/\d+$/, "")

      Enum.find_value(found, fn node ->
        with [other, ^host] <- String.split(Atom.to_string(node), "@", parts: 2),
             true <- String.starts_with?(other, base),
             {port, ""} when port in 1..65_535 and port != own <-
               Integer.parse(String.replace_prefix(other, base, "")),
             do:
               "DNS lists #{node} on this node's host, port #{port}, but this node is " <>
                 "#{self} and listens on #{own}: its peers dial #{port}. Register the " <>
                 "service with port #{own}, or name the node after port #{port}",
             else: (_ -> nil)
      end)
    else
      _ -> nil
    end
  end

  @doc """
  The name of a `node_port: :srv` topology's node: `{:ok, "<sname>@<host>"}`
  (dialed on `port`, 1..65535, the SRV record's), or `{:error, {kind,
  message}}` as `build/3`. Makes no atom.
  """
  @spec build_srv(String.t(), :inet.port_number(), String.t()) ::
          {:ok, String.t()} | {:error, {atom(), String.t()}}
  def build_srv(sname, port, host)
      when is_binary(sname) and is_integer(port) and port in 1..65_535 and is_binary(host) do
    if valid_host?(host), do: {:ok, "#{sname}@#{host}"}, else: invalid_host(host)
  end

  def build_srv(sname, port, host),
    do:
      {:error,
       {:invalid_record,
        "expected a port in 1..65535 and a host, got: #{inspect({sname, port, host})}"}}

  defp invalid_host(host),
    do:
      {:error,
       {:invalid_host,
        "SRV target #{inspect(host)} is not a host name or IP address (expected " <>
          "dot-separated labels of letters, digits and inner '-' (RFC 1123), or an IP literal)"}}

  @doc """
  Whether `host` is an IP literal, or a host name (RFC 1123): labels of
  1..63 letters, digits and '-' (not at either end), at most 253
  characters. Rules out what DNS can carry but no host is called: spaces,
  '_', escaped bytes, non-ASCII, empty labels and the root "." (RFC 2782's
  "no service here").
  """
  @spec valid_host?(String.t()) :: boolean()
  def valid_host?(host) when is_binary(host) do
    match?({:ok, _}, :inet.parse_strict_address(:binary.bin_to_list(host))) or
      (byte_size(host) <= 253 and
         host |> String.split(".") |> Enum.all?(&(&1 =~ @host_label)))
  end
end
