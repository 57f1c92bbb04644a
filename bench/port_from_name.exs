defmodule Caravan.Bench.RegexDistPort do
  @moduledoc false
  # The baseline: the port rule as Caravan 1.x computes it in Elixir
  # (uberbrodt/caravan, lib/caravan/epmd.ex, dist_port/1): the node name to
  # a string, the host part cut off with one Regex, the trailing digits of
  # the name part found with another, String.to_integer/1 on them, 4370 when
  # there are none. Written here again, same two regexes, same steps.

  def dist_port(name) when is_atom(name), do: name |> Atom.to_string() |> dist_port()
  def dist_port(name) when is_list(name), do: name |> List.to_string() |> dist_port()

  def dist_port(name) when is_binary(name) do
    name_part = Regex.replace(~r/@.*$/, name, "")

    case Regex.run(~r/[0-9]+$/, name_part) do
      nil -> 4370
      [digits] -> String.to_integer(digits)
    end
  end
end

defmodule Caravan.Bench.PortFromName do
  @moduledoc """
  Row 1: the port rule. `Caravan.Epmd.dist_port/1` (the NIF behind the
  public function) against Caravan 1.x's Regex rule and against the floor,
  `Caravan.Native.floor/0` (a NIF that does nothing). Calls per second in
  one process and in one process per scheduler, measured in interleaved
  rounds (median of the rounds), each round a fixed time window.
  """
  alias Caravan.Bench.{Log, Row, Stats}

  @node :"app-4370@web1.node.dc1.consul"
  @chunk 1_000

  def run(opts) do
    rounds = if opts[:quick], do: 3, else: 7
    window = if opts[:quick], do: 100, else: 300

    # The same answer from both rules, or the comparison means nothing.
    for name <- [@node, :"app-name3434@example.net", :"app-name-4834@example.net", :app@host] do
      ours = Caravan.Epmd.dist_port(name)
      theirs = Caravan.Bench.RegexDistPort.dist_port(name)
      ours == theirs || raise "port rules disagree on #{name}: #{ours} vs #{theirs}"
    end

    :ok = Caravan.Native.floor()

    for {label, procs} <- [
          {"1 process", 1},
          {"#{System.schedulers_online()} schedulers", System.schedulers_online()}
        ] do
      Log.say("row 1: dist_port/1, #{label}, #{rounds} rounds of #{window} ms per implementation")

      rates =
        for _ <- 1..rounds, impl <- [:caravan, :regex, :floor], reduce: %{} do
          acc ->
            r = rate(impl, procs, window)
            Map.update(acc, impl, [r], &[r | &1])
        end

      %Row{
        group: 1,
        metric: "dist_port/1 calls/s, #{label}",
        caravan: Stats.median(rates.caravan),
        alt: Stats.median(rates.regex),
        floor: Stats.median(rates.floor),
        unit: "calls/s",
        better: :higher,
        target: [{:vs_alt_at_least, 10.0}, {:vs_floor_at_most, 3.0}],
        alt_name: "Caravan 1.x Regex rule",
        floor_name: "Caravan.Native.floor/0"
      }
    end
  end

  # Calls per second of `impl` in `procs` processes over `window_ms`.
  defp rate(impl, procs, window_ms) do
    parent = self()

    deadline =
      System.monotonic_time() + System.convert_time_unit(window_ms, :millisecond, :native)

    for _ <- 1..procs do
      spawn_link(fn ->
        t0 = System.monotonic_time()
        n = loop(impl, deadline, 0)
        send(parent, {:calls, n, System.monotonic_time() - t0})
      end)
    end

    {calls, time} =
      Enum.reduce(1..procs, {0, 0}, fn _, {c, t} ->
        receive do
          {:calls, n, dt} -> {c + n, max(t, dt)}
        end
      end)

    calls / System.convert_time_unit(time, :native, :microsecond) * 1_000_000
  end

  defp loop(impl, deadline, n) do
    chunk(impl, @chunk)

    if System.monotonic_time() < deadline,
      do: loop(impl, deadline, n + @chunk),
      else: n + @chunk
  end

  defp chunk(_impl, 0), do: :ok

  defp chunk(:caravan, k) do
    4370 = Caravan.Epmd.dist_port(@node)
    chunk(:caravan, k - 1)
  end

  defp chunk(:regex, k) do
    4370 = Caravan.Bench.RegexDistPort.dist_port(@node)
    chunk(:regex, k - 1)
  end

  defp chunk(:floor, k) do
    :ok = Caravan.Native.floor()
    chunk(:floor, k - 1)
  end
end
