defmodule Caravan.Test.Loopback do
  @moduledoc """
  The plan for loopback addresses in tests: every call to `ip/0` hands out
  an IPv4 address of its own in 127.100.0.0/16 (all of 127.0.0.0/8 is
  loopback on Linux), never handed out twice in one test run. A test that
  takes its addresses here can use any fixed port on them, so test files
  that use only such addresses can run `async: true`.

  DNS servers take their addresses here. Some files that boot BEAM nodes
  still give their nodes fixed addresses in 127.0.0.0/16, where node names,
  `.addr.` targets or expected output spell them; those files are
  `async: false` (the nodes listen on fixed distribution ports), so ExUnit
  runs them one at a time after the async files, never beside them. This
  range does not overlap theirs.
  """

  @key {__MODULE__, :counter}

  @doc "A loopback address no other caller got in this run, as a tuple."
  @spec ip() :: :inet.ip4_address()
  def ip do
    n = :atomics.add_get(counter(), 1, 1)
    if n > 65_534, do: raise("Caravan.Test.Loopback: 127.100.0.0/16 is used up")
    {127, 100, div(n, 256), rem(n, 256)}
  end

  @doc "`ip/0` as a string, e.g. `\"127.100.0.7\"`."
  @spec address() :: String.t()
  def address, do: ip() |> :inet.ntoa() |> to_string()

  defp counter do
    case :persistent_term.get(@key, nil) do
      nil ->
        # Two first callers may race: the first to insert wins.
        ref = :atomics.new(1, signed: false)
        :global.trans({@key, self()}, fn -> put_new(ref) end)

      ref ->
        ref
    end
  end

  defp put_new(ref) do
    case :persistent_term.get(@key, nil) do
      nil ->
        :persistent_term.put(@key, ref)
        ref

      existing ->
        existing
    end
  end
end
