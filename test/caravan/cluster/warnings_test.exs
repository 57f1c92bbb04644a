defmodule Caravan.Cluster.WarningsTest do
  use ExUnit.Case, async: true

  alias Caravan.Cluster.Warnings

  test "a streak warns once, then debug, and its end is an info once" do
    w = Warnings.new()
    assert {nil, w} = Warnings.recover(w, :a)
    assert {:warning, w} = Warnings.warn(w, :a)
    assert {:debug, w} = Warnings.warn(w, :a)
    assert {:warning, w} = Warnings.warn(w, :b)
    assert {:info, w} = Warnings.recover(w, :a)
    assert {nil, w} = Warnings.recover(w, :a)
    assert {:warning, _} = Warnings.warn(w, :a)
    assert Warnings.warned?(w, :b)
  end

  test "clear and clear_if forget silently" do
    {_, w} = Warnings.warn(Warnings.new(), {:connect, :a@h})
    {_, w} = Warnings.warn(w, {:connect, :b@h})
    {_, w} = Warnings.warn(w, :other)
    w = Warnings.clear_if(w, &match?({:connect, :a@h}, &1))
    refute Warnings.warned?(w, {:connect, :a@h})
    assert Warnings.warned?(w, {:connect, :b@h})
    w = Warnings.clear(w, :other)
    assert {nil, _} = Warnings.recover(w, :other)
  end
end
