"""``torchgp._shapes.broadcast_shapes``: torch's broadcasting rule without torch's first-call import."""

import itertools
import subprocess
import sys

import pytest
import torch

from torchgp._shapes import broadcast_shapes

_SHAPES = [(), (1,), (3,), (2, 1), (1, 3), (2, 3), (4, 1, 1), (4, 2, 3), (0,), (1, 0), (5, 0, 3)]


@pytest.mark.parametrize("a,b", list(itertools.product(_SHAPES, repeat=2)))
def test_equals_torch_or_raises_as_torch(a, b):
    try:
        want = torch.broadcast_shapes(a, b)
    except RuntimeError:
        with pytest.raises(RuntimeError, match="cannot be broadcast"):
            broadcast_shapes(a, b)
        return
    assert broadcast_shapes(a, b) == want
    assert isinstance(broadcast_shapes(a, b), torch.Size)


def test_three_shapes():
    assert broadcast_shapes((2, 1, 1), (1, 3, 1), (4,)) == torch.Size((2, 3, 4))
    with pytest.raises(RuntimeError):
        broadcast_shapes((2, 1), (3, 1), (1, 1))


def test_does_not_import_sympy():
    code = "import sys, torch, torchgp._shapes as s; s.broadcast_shapes((2, 1), (1, 3), (4, 1, 1)); print('sympy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
