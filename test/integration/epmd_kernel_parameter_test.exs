defmodule Caravan.EpmdKernelParameterTest do
  # The two ways to select Caravan's epmd module, on real nodes with no epmd
  # daemon: the `-epmd_module` flag (OTP 23+, deprecated from OTP 27.2) and
  # the kernel parameter `epmd_module` (read from OTP 27.2, kernel 10.2).
  # The parameter is written in a vm.args file read with -args_file, as a
  # release does, so the quoting users copy from the README is the quoting
  # tested here. Each test asserts what the running OTP does, both sides:
  # OTP 27.2+ selects the module through the parameter and refuses both
  # forms at once (`{invalid_configuration, ...}`); older OTPs ignore the
  # parameter (net_kernel keeps erl_epmd) and take the flag.
  use ExUnit.Case, async: false

  @moduletag :integration

  alias Caravan.Test.{BeamNode, Listeners}

  @moduletag :slow
  @moduletag timeout: 120_000

  @ip {127, 0, 9, 1}
  @vm_args_line ~s(-kernel epmd_module "'Elixir.Caravan.Epmd.Client'"\n)

  setup_all do
    Listeners.guard(4369)
    tmp = Path.join(System.tmp_dir!(), "caravan_kparam_#{System.unique_integer([:positive])}")
    File.mkdir_p!(tmp)
    on_exit(fn -> File.rm_rf!(tmp) end)
    vm_args = Path.join(tmp, "vm.args")
    File.write!(vm_args, @vm_args_line)
    %{vm_args: vm_args, reads_parameter?: reads_parameter?()}
  end

  # OTP 27.2 ships kernel 10.2, the first to read the parameter.
  defp reads_parameter? do
    Version.match?(Application.spec(:kernel, :vsn) |> to_string() |> version(), ">= 10.2.0")
  end

  defp version(vsn) do
    case String.split(vsn, ".") do
      [major] -> "#{major}.0.0"
      [major, minor] -> "#{major}.#{minor}.0"
      [major, minor, patch | _] -> "#{major}.#{minor}.#{patch}"
    end
  end

  # :peer.start/1 exits when the node halts during boot; as {:error, reason}.
  # A kernel that fails to start writes no erl_crash.dump into the checkout.
  defp start(name, opts) do
    opts = Keyword.put(opts, :env, [{"ERL_CRASH_DUMP_SECONDS", "0"}])
    BeamNode.start_result(name, "127.0.9.1", @ip, opts)
  catch
    :exit, reason -> {:error, reason}
  end

  defp stop_on_exit({:ok, peer, _node} = started) do
    on_exit(fn -> BeamNode.stop(peer) end)
    started
  end

  defp stop_on_exit(other), do: other

  test "the -epmd_module flag alone selects Caravan on every OTP" do
    assert {:ok, peer, _node} = stop_on_exit(start("flag-4911", []))
    assert BeamNode.call(peer, :net_kernel, :epmd_module, []) == Caravan.Epmd.Client
    assert BeamNode.listening?(@ip, 4911)
    assert Listeners.on_port(4369) == []
  end

  test "the kernel parameter alone: selects Caravan on OTP 27.2+, ignored before", ctx do
    opts = [epmd_flag: false, args: ["-args_file", ctx.vm_args]]

    if ctx.reads_parameter? do
      assert {:ok, peer, _node} = stop_on_exit(start("param-4912", opts))
      assert BeamNode.call(peer, :net_kernel, :epmd_module, []) == Caravan.Epmd.Client
      assert BeamNode.listening?(@ip, 4912)
    else
      # The parameter is set, and net_kernel does not read it: it keeps
      # erl_epmd, which registers with the epmd daemon that
      # -start_epmd false did not start, so a named node cannot boot
      # ("register/listen error: econnrefused").
      assert {:error, {:boot_failed, {:exit_status, 1}}} = stop_on_exit(start("param-4912", opts))
      refute BeamNode.listening?(@ip, 4912)

      # The same vm.args on a node without a name boots, and shows why.
      {:ok, peer, :nonode@nohost} =
        :peer.start(%{
          connection: :standard_io,
          args: Enum.map(BeamNode.erl_args(@ip, opts), &String.to_charlist/1),
          wait_boot: 30_000
        })

      on_exit(fn -> BeamNode.stop(peer) end)

      assert BeamNode.call(peer, :application, :get_env, [:kernel, :epmd_module]) ==
               {:ok, Caravan.Epmd.Client}

      assert BeamNode.call(peer, :net_kernel, :epmd_module, []) == :erl_epmd
    end

    assert Listeners.on_port(4369) == []
  end

  test "both forms at once: refused on OTP 27.2+, the flag wins before", ctx do
    opts = [args: ["-args_file", ctx.vm_args]]

    if ctx.reads_parameter? do
      # net_kernel: {invalid_configuration, "either -epmd_module or kernel
      # epmd_module should be specified, not both"}; distribution does not
      # start, so a named node does not boot.
      assert {:error, {:boot_failed, _}} = stop_on_exit(start("both-4913", opts))
      refute BeamNode.listening?(@ip, 4913)
    else
      assert {:ok, peer, _node} = stop_on_exit(start("both-4913", opts))
      assert BeamNode.call(peer, :net_kernel, :epmd_module, []) == Caravan.Epmd.Client
      assert BeamNode.listening?(@ip, 4913)
    end
  end
end
