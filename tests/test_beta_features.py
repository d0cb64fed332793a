"""torchgp.beta_features: GPyTorch's two names, accepted with its values."""

from __future__ import annotations

import pytest

import torchgp


def test_checkpoint_kernel_warns_and_holds_its_value():
    bf = torchgp.beta_features
    assert bf.checkpoint_kernel.value() == 0
    with pytest.warns(DeprecationWarning, match="no effect"), bf.checkpoint_kernel(1000):
        assert bf.checkpoint_kernel.value() == 1000
    assert bf.checkpoint_kernel.value() == 0
    with pytest.raises(ValueError):
        bf.checkpoint_kernel(-1)


def test_default_preconditioner_flag():
    bf = torchgp.beta_features
    assert bf.default_preconditioner.off()
    with bf.default_preconditioner():
        assert bf.default_preconditioner.on()
    assert bf.__all__ == ["checkpoint_kernel", "default_preconditioner"]
