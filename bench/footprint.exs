defmodule Caravan.Bench.Footprint do
  @moduledoc """
  Rows 5 and 6: scheduler hygiene and footprint, each measured in a fresh,
  non-distributed node (a separate OS process with nothing of Caravan
  loaded at first), so the numbers are the node's own:

    * Caravan node: /proc figures of the bare VM, after
      `Caravan.Native.load/0`, after the first lookup (which starts the
      tokio runtime); then N SRV lookups (3 records, 100 in flight, after
      N/5 unsampled warm-up lookups) and M `dist_port/1` calls (one process
      per scheduler) with `:erlang.system_monitor/2` `long_schedule` at
      1 ms; RSS sampled after every tenth of the lookups (drift: mean of the
      last three samples minus mean of the first three); threads again at
      rest.
    * Alternative node: the same lookups with `:inet_res` (EDNS0, 1232).
    * Floor: the bare VM (nothing added) for the footprint; for the
      long_schedule rows, controls that cost nothing under the same load:
      raw UDP exchanges instead of lookups, `Caravan.Native.floor/0`
      instead of `dist_port/1`. Events in the controls come from the
      machine (the OS descheduling a busy scheduler thread on a shared
      2-core box), not from the code under test.

  A long_schedule event counts against Caravan when it happened in a
  process whose only job is calling Caravan (the bench's workers) or was
  scheduled in or out inside a Caravan module.
  """
  alias Caravan.Bench.{Log, Peers, PeerSide, Row, SrvLookup}

  # RSS may move this much (MB) from the first three tenths of the lookups
  # to the last three and still count as flat.
  @flat_mb 2.0

  def run(%{quick: quick, ns: ns}) do
    lookups = if quick, do: 10_000, else: 100_000
    calls = if quick, do: 1_000_000, else: 10_000_000
    query = SrvLookup.query(3)

    Log.say(
      "row 5/6: Caravan node: load, first lookup, #{lookups} lookups, #{calls} dist_port/1 calls"
    )

    c = measure(:caravan, lookups, calls, query, ns)
    Log.say("row 5/6: :inet_res node: #{lookups} lookups")
    a = measure(:inet_res, lookups, 0, query, ns)

    c_events = Enum.filter(c.lookup_events, &PeerSide.event_of?(&1, :caravan))
    a_events = Enum.filter(a.lookup_events, &PeerSide.event_of?(&1, :inet_res))
    d_events = Enum.filter(c.call_events, &PeerSide.event_of?(&1, :caravan))
    f_events = Enum.filter(c.floor_events, &PeerSide.event_of?(&1, :floor))
    u_events = Enum.filter(a.control_events, &PeerSide.event_of?(&1, :floor))

    added = fn before, later -> later.threads - before.threads end
    mb = fn kb -> kb / 1024 end
    # The mean of the last three samples against the mean of the first
    # three: RSS moves by a few MB either way between samples (allocator
    # carriers and glibc arenas), a leak moves it one way.
    mean3 = fn samples -> Enum.sum(samples) / 3 end
    drift = fn samples -> mb.(mean3.(Enum.take(samples, -3)) - mean3.(Enum.take(samples, 3))) end

    new_threads =
      Map.merge(c.rest.thread_names, c.bare.thread_names, fn _k, later, before ->
        later - before
      end)
      |> Enum.filter(fn {_name, n} -> n > 0 end)
      |> Enum.map_join(", ", fn {name, n} -> "#{n} x #{name}" end)

    [
      %Row{
        group: 5,
        metric: "long_schedule events (> 1 ms), #{lookups} lookups",
        caravan: length(c_events),
        alt: length(a_events),
        floor: length(u_events),
        unit: "events",
        better: :lower,
        target: {:caravan_at_most, 0},
        note:
          "floor: the same count of raw UDP exchanges; all events on the node: Caravan's #{length(c.lookup_events)}, " <>
            ":inet_res's #{length(a.lookup_events)}, floor's #{length(a.control_events)}; " <>
            "#{c.lookups.errors + a.lookups.errors + a.control.errors} failed lookups; " <>
            "the OS preempted the scheduler threads #{c.lookup_preempted} times during Caravan's lookups, " <>
            "#{a.lookup_preempted} during :inet_res's, #{a.control_preempted} during the floor's" <>
            describe(c_events)
      },
      %Row{
        group: 5,
        metric: "long_schedule events (> 1 ms), #{calls} dist_port/1 calls",
        caravan: length(d_events),
        floor: length(f_events),
        unit: "events",
        better: :lower,
        target: {:caravan_at_most, 0},
        note:
          "floor: the same loop calling Caravan.Native.floor/0; calls took #{c.call_ms} ms (floor #{c.floor_ms} ms), " <>
            "events per second of loop: #{per_s(length(c.call_events), c.call_ms)} (floor #{per_s(length(c.floor_events), c.floor_ms)}); " <>
            "the OS preempted the scheduler threads #{c.call_preempted} times during the dist_port/1 loop, " <>
            "#{c.floor_preempted} during the floor loop" <> describe(d_events)
      },
      %Row{
        group: 6,
        metric: "OS threads added by loading the NIF",
        caravan: added.(c.bare, c.loaded),
        alt: 0,
        floor: 0,
        unit: "threads",
        better: :lower,
        note: "bare VM: #{c.bare.threads} threads"
      },
      %Row{
        group: 6,
        metric: "OS threads added, at rest after the lookups",
        caravan: added.(c.bare, c.rest),
        alt: added.(a.bare, a.rest),
        floor: 0,
        unit: "threads",
        better: :lower,
        target: {:caravan_at_most, 2},
        note: "new threads: #{new_threads}"
      },
      %Row{
        group: 6,
        metric: "RSS added by the NIF and its runtime",
        caravan: mb.(c.first.rss_kb - c.bare.rss_kb),
        alt: mb.(a.first.rss_kb - a.bare.rss_kb),
        floor: 0,
        unit: "MB",
        better: :lower,
        note:
          "bare VM #{Float.round(mb.(c.bare.rss_kb), 1)} MB; after load_nif +#{Float.round(mb.(c.loaded.rss_kb - c.bare.rss_kb), 2)} MB; alternative: after its first lookup"
      },
      %Row{
        group: 6,
        metric: "RSS drift over #{lookups} lookups (last 3 tenths - first 3)",
        caravan: drift.(c.lookups.rss_kb),
        alt: drift.(a.lookups.rss_kb),
        unit: "MB",
        better: :lower,
        target: {:caravan_at_most, @flat_mb},
        note:
          "after #{div(lookups, 5)} warm-up lookups, RSS after each tenth (MB): Caravan #{inspect(Enum.map(c.lookups.rss_kb, &Float.round(mb.(&1), 1)))}, " <>
            ":inet_res #{inspect(Enum.map(a.lookups.rss_kb, &Float.round(mb.(&1), 1)))}; flat means within #{@flat_mb} MB"
      }
    ]
  end

  defp measure(impl, lookups, calls, query, ns) do
    {peer, _} = Peers.start(kind: :plain)

    try do
      call = fn f, a -> Peers.call(peer, PeerSide, f, a, 600_000) end
      settle = fn -> Process.sleep(500) end
      settle.()
      bare = call.(:proc_status, [])

      loaded =
        if impl == :caravan do
          :ok = Peers.call(peer, Caravan.Native, :load, [])
          settle.()
          call.(:proc_status, [])
        end

      3 = call.(:lookup, [impl, query, ns])
      settle.()
      first = call.(:proc_status, [])

      {lookup_result, lookup_events, lookup_preempted} =
        call.(:monitored_lookups, [1, impl, lookups, 100, query, ns, 3])

      # Controls: the same loads around what costs nothing. Events there
      # come from the machine (the OS descheduling a scheduler thread).
      {control_result, control_events, control_preempted} =
        if impl == :inet_res,
          do: call.(:monitored_lookups, [1, :floor, lookups, 100, query, ns, 3]),
          else: {nil, [], 0}

      {call_ms, call_events, call_preempted} =
        if calls > 0,
          do: call.(:monitored_dist_port_calls, [1, calls, :caravan]),
          else: {nil, [], 0}

      {floor_ms, floor_events, floor_preempted} =
        if calls > 0,
          do: call.(:monitored_dist_port_calls, [1, calls, :floor]),
          else: {nil, [], 0}

      # Let the tokio blocking pool's idle threads (if any) expire.
      Process.sleep(if impl == :caravan, do: 1_000, else: 100)
      rest = call.(:proc_status, [])

      %{
        bare: bare,
        loaded: loaded,
        first: first,
        rest: rest,
        lookups: lookup_result,
        lookup_events: lookup_events,
        lookup_preempted: lookup_preempted,
        control_preempted: control_preempted,
        call_preempted: call_preempted,
        floor_preempted: floor_preempted,
        call_ms: call_ms,
        call_events: call_events,
        control: control_result,
        control_events: control_events,
        floor_ms: floor_ms,
        floor_events: floor_events
      }
    after
      Peers.stop(peer)
    end
  end

  defp per_s(_events, ms) when ms in [nil, 0], do: "-"
  defp per_s(events, ms), do: Float.round(events * 1000 / ms, 1)

  defp describe([]), do: ""

  defp describe(events) do
    "; Caravan's: " <>
      (events
       |> Enum.take(5)
       |> Enum.map_join(", ", fn e ->
         "#{e.timeout_ms} ms in #{inspect(e.in)} out #{inspect(e.out)}"
       end))
  end
end
