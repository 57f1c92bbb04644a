# Every OS process this run starts inherits this run's tag; after the last
# test, none may still run (Caravan.Test.OsProcesses).
run = Caravan.Test.OsProcesses.mark_run()

ExUnit.after_suite(fn result ->
  leftovers =
    case Caravan.Test.OsProcesses.check(run) do
      :ok ->
        0

      {:error, procs} ->
        # Fails `mix test` (exit status 1) even when every test passed.
        System.at_exit(fn _status -> exit({:shutdown, 1}) end)
        length(procs)
    end

  # For CI (.ci/leg): the counts in one format on every Elixir version.
  if path = System.get_env("CARAVAN_TEST_COUNTS") do
    File.write!(
      path,
      "#{result.total} tests, #{result.failures} failures, #{result.excluded} excluded, " <>
        "#{leftovers} leftover processes\n"
    )
  end
end)

ExUnit.start(capture_log: true)
