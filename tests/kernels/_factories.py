"""Kernel factories shared by the conformance case and the family tests.

Each :class:`KernelCase` builds a kernel for ``d`` input dimensions and a ``batch_shape``, with its
hyperparameters moved away from their defaults (random, seeded) so that wrong broadcasting or a
hyperparameter that is ignored shows up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

import torchgp
from torchgp import kernels as K


class UserKernel(K.Kernel):
    """A kernel written the way users write them: only ``forward(x1, x2)``, plain parameters."""

    def __init__(self, param1=0.7, param2=1.3):
        super().__init__()
        self.param1 = torch.nn.Parameter(torch.tensor(param1))
        self.param2 = torch.nn.Parameter(torch.tensor(param2))

    def forward(self, x1, x2):
        return torch.exp(-(torch.cdist(x1, x2) ** 2) / (2 * self.param1)) * self.param2


def randomise(kernel: torchgp.Module, seed: int = 1) -> torchgp.Module:
    """Set every raw hyperparameter to a seeded random value near 0 (constrained values ~ 0.3 .. 1.5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in kernel.named_parameters():
            if name.endswith("param1") or name.endswith("param2"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g, dtype=p.dtype))
            else:
                p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) - 0.5)
    return kernel


@dataclasses.dataclass
class KernelCase:
    name: str
    build: Callable[[int, torch.Size], K.Kernel]
    supports_batch: bool = True  # hyperparameters take a batch_shape
    only_1d: bool = False  # valid (PSD) only on 1-D inputs
    single_lengthscale: bool = True  # same parameters for every input dim (last_dim_is_batch is meaningful)

    def make(self, d: int = 2, batch_shape=torch.Size(), dtype=torch.float64, seed: int = 1) -> K.Kernel:
        return randomise(self.build(d, torch.Size(batch_shape)), seed).to(dtype)

    def __repr__(self) -> str:
        return self.name


def _sm(d, b):
    k = K.SpectralMixtureKernel(num_mixtures=3, ard_num_dims=d, batch_shape=b)
    return k


CASES = [
    KernelCase("rbf", lambda d, b: K.RBFKernel(batch_shape=b)),
    KernelCase("rbf_ard", lambda d, b: K.RBFKernel(ard_num_dims=d, batch_shape=b), single_lengthscale=False),
    KernelCase(
        "matern05", lambda d, b: K.MaternKernel(nu=0.5, ard_num_dims=d, batch_shape=b), single_lengthscale=False
    ),
    KernelCase("matern15", lambda d, b: K.MaternKernel(nu=1.5, batch_shape=b)),
    KernelCase(
        "matern25", lambda d, b: K.MaternKernel(nu=2.5, ard_num_dims=d, batch_shape=b), single_lengthscale=False
    ),
    KernelCase("rq", lambda d, b: K.RQKernel(ard_num_dims=d, batch_shape=b), single_lengthscale=False),
    KernelCase("periodic", lambda d, b: K.PeriodicKernel(ard_num_dims=d, batch_shape=b), single_lengthscale=False),
    KernelCase("periodic_shared", lambda d, b: K.PeriodicKernel(batch_shape=b)),
    KernelCase("linear", lambda d, b: K.LinearKernel(batch_shape=b)),
    KernelCase("polynomial", lambda d, b: K.PolynomialKernel(power=2, batch_shape=b)),
    KernelCase("cosine", lambda d, b: K.CosineKernel(batch_shape=b), only_1d=True),
    KernelCase("spectral_mixture", _sm, single_lengthscale=False),
    KernelCase(
        "scale_rbf", lambda d, b: K.ScaleKernel(K.RBFKernel(ard_num_dims=d, batch_shape=b)), single_lengthscale=False
    ),
    KernelCase(
        "sum",
        lambda d, b: K.ScaleKernel(K.RBFKernel(batch_shape=b)) + K.MaternKernel(nu=1.5, batch_shape=b),
    ),
    KernelCase(
        "product",
        lambda d, b: K.RBFKernel(batch_shape=b) * K.PeriodicKernel(batch_shape=b),
    ),
    KernelCase(
        "active_dims",
        lambda d, b: K.RBFKernel(active_dims=[0], batch_shape=b) + K.LinearKernel(active_dims=[d - 1], batch_shape=b),
        single_lengthscale=False,
    ),
    KernelCase("user_forward_only", lambda d, b: UserKernel(), supports_batch=False),
]

CASE_IDS = [c.name for c in CASES]
