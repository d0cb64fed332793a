"""``state_key``: equal exactly when every value the cache depends on is the same."""

from __future__ import annotations

import pytest
import torch

from torchgp._state import StateKey, state_key


@pytest.fixture
def lin():
    torch.manual_seed(0)
    mod = torch.nn.Linear(3, 2)
    mod.register_buffer("count", torch.tensor(0))
    return mod


def test_equal_for_unchanged_module(lin):
    assert state_key(lin) == state_key(lin)
    assert not (state_key(lin) != state_key(lin))


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.weight.data.fill_(0.25),  # no version bump
        lambda m: m.bias.data.__setitem__(0, 7.0),  # .data[...] = v: no version bump
        lambda m: setattr(m.weight, "data", m.weight.data.clone() * 2),  # new storage
        lambda m: m.count.fill_(1),  # integer buffer
    ],
)
def test_value_edits_change_the_key(lin, edit):
    before = state_key(lin)
    version = lin.weight._version
    with torch.no_grad():
        edit(lin)
    assert state_key(lin) != before
    assert lin.weight._version == version  # the edits that matter bump no version


def test_key_does_not_alias_live_parameters(lin):
    # one device, one tensor: the stored key must still be a copy
    p = torch.nn.Parameter(torch.ones(4))
    mod = torch.nn.Module()
    mod.p = p
    k = state_key(mod)
    p.data.fill_(2.0)
    assert k != state_key(mod)


def test_extra_tensors_values_shapes_and_absence(lin):
    x = torch.rand(5, 3, dtype=torch.float64)
    k = state_key(lin, x)
    assert k == state_key(lin, x.clone())
    y = x.clone()
    y.data[2, 1] += 1e-12
    assert k != state_key(lin, y)
    assert k != state_key(lin, x.reshape(3, 5))  # same bytes, another shape
    assert k != state_key(lin, x.float())  # another dtype
    assert k != state_key(lin, x, None)
    assert state_key(lin, None, x) != state_key(lin, x, None)


def test_grad_mode_and_settings_enter_the_key(lin):
    k = state_key(lin, settings=(1,))
    with torch.no_grad():
        assert state_key(lin, settings=(1,)) != k
    assert state_key(lin, settings=(2,)) != k
    assert state_key(lin, settings=(1,)) == k


def test_nan_equals_itself_and_complex_and_bool():
    mod = torch.nn.Module()
    mod.register_buffer("a", torch.tensor([float("nan"), 1.0]))
    mod.register_buffer("b", torch.tensor([1 + 2j]))
    mod.register_buffer("c", torch.tensor([True, False]))
    k = state_key(mod)
    assert k == state_key(mod)
    mod.b.imag.fill_(3.0)
    assert k != state_key(mod)


def test_no_tensors_and_other_types():
    assert state_key(None) == state_key(None)
    assert state_key(torch.nn.Module()) == state_key(None)
    assert (state_key(None) == object()) is False
    assert isinstance(state_key(None), StateKey)
    with pytest.raises(TypeError):
        hash(state_key(None))


def test_exclude_skips_a_submodule():
    outer = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    k = state_key(outer, exclude=outer[1])
    with torch.no_grad():
        outer[1].weight.data.fill_(5.0)
    assert state_key(outer, exclude=outer[1]) == k
    with torch.no_grad():
        outer[0].weight.data.fill_(5.0)
    assert state_key(outer, exclude=outer[1]) != k


def test_one_element_tensor_with_stride_zero():
    # such buffers come from expand()ed constants; they count as contiguous but cannot be viewed as bytes
    t = torch.tensor([1.5]).as_strided((1,), (0,))
    assert state_key(None, t) == state_key(None, torch.tensor([1.5]))
    assert state_key(None, t) != state_key(None, torch.tensor([2.5]))
