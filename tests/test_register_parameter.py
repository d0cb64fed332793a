"""``Module.register_parameter`` takes GPyTorch's keywords (``name=``, ``parameter=``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchgp


class _Holder(torchgp.Module):
    def __init__(self):
        super().__init__()
        self.register_parameter(name="offset", parameter=nn.Parameter(torch.tensor([0.5])))
        self.register_parameter("scale", nn.Parameter(torch.tensor([2.0])))
        self.register_parameter(name="unused", parameter=None)


def test_register_parameter_by_keyword_registers_and_trains():
    m = _Holder()
    assert dict(m.named_parameters()).keys() == {"offset", "scale"}
    assert m.unused is None
    (m.offset * m.scale).sum().backward()
    assert m.offset.grad.item() == pytest.approx(2.0)
    assert "offset" in m.state_dict()


def test_register_parameter_before_init_says_what_to_do():
    class Broken(torchgp.Module):
        def __init__(self):
            self.register_parameter(name="a", parameter=nn.Parameter(torch.zeros(1)))

    with pytest.raises(AttributeError, match="super"):
        Broken()


def test_register_parameter_refuses_a_plain_tensor():
    with pytest.raises(TypeError):
        _Holder().register_parameter(name="b", parameter=torch.zeros(1))
