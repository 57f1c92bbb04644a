# Every OS process this run starts inherits this run's tag; after the last
# test, none may still run (Caravan.Test.OsProcesses).
run = Caravan.Test.OsProcesses.mark_run()

ExUnit.after_suite(fn _result ->
  with {:error, _leftovers} <- Caravan.Test.OsProcesses.check(run) do
    # Fails `mix test` (exit status 1) even when every test passed.
    System.at_exit(fn _status -> exit({:shutdown, 1}) end)
  end
end)

ExUnit.start(capture_log: true)
