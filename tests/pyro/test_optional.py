"""Pyro stays optional: ``import torchgp`` never imports it, and the Pyro methods say how to install it."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import sys
import torch, torchgp
assert "pyro" not in sys.modules, "import torchgp imported pyro"
assert torchgp.models.PyroGP.__name__ == "PyroGP"
sys.modules["pyro"] = None  # from here on, as if pyro-ppl were not installed
try:
    torchgp.kernels.RBFKernel(lengthscale_prior=torchgp.priors.GammaPrior(2.0, 1.0)).pyro_sample_from_prior()
except ImportError as err:
    assert "pip install 'torchgp[pyro]'" in str(err), err
else:
    raise AssertionError("pyro_sample_from_prior ran without pyro")
print("ok")
"""


def test_import_torchgp_does_not_import_pyro_and_methods_say_how_to_install_it():
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
