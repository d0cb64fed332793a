r"""How to build a kernel for testing: :class:`KernelCase`, and the inputs it is evaluated on.

A case builds a kernel for ``d`` input dimensions and a ``batch_shape`` (``build(d, batch_shape)``), with
its hyperparameters moved away from their defaults (random, seeded: :func:`randomise`) so that wrong
broadcasting or an ignored hyperparameter shows up, and draws inputs ``(*batch, n, d)`` suited to it.

Example:
    >>> import torch
    >>> from torchgp.kernels import RBFKernel
    >>> case = KernelCase("rbf", lambda d, b: RBFKernel(batch_shape=b))
    >>> case.make(batch_shape=torch.Size([2]))(case.x(5, 2)).shape
    torch.Size([2, 5, 5])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

__all__ = ["KernelCase", "randomise", "randn_inputs", "ball_inputs", "one_hot_inputs", "index_inputs", "VOCAB"]


def randomise(kernel: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Set every raw hyperparameter to a seeded random value in ``[-0.5, 0.5)`` (constrained ~ 0.5 .. 1.0).

    Plain (unconstrained) parameters named ``param*`` get ``[0.5, 1.5)`` instead, so they stay positive.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in kernel.named_parameters():
            u = torch.rand(p.shape, generator=g, dtype=p.dtype)
            p.copy_(0.5 + u if name.rpartition(".")[2].startswith("param") else u - 0.5)
    return kernel


# ---------------------------------------------------------------------------- input generators
def randn_inputs(n: int, d: int, *batch: int, dtype=torch.float64, seed: int = 0, scale: float = 1.0):
    """``(*batch, n, d)`` standard normal inputs (times ``scale``)."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*batch, n, d, generator=g, dtype=dtype)


def ball_inputs(n: int, d: int, *batch: int, dtype=torch.float64, seed: int = 0):
    """``(*batch, n, d)`` points inside the unit ball (norms in (0.1, 0.9)), for the cylindrical kernel."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, n, d, generator=g, dtype=dtype)
    radius = 0.1 + 0.8 * torch.rand(*batch, n, 1, generator=g, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True) * radius


VOCAB = 3  # alphabet size of one_hot_inputs


def one_hot_inputs(n: int, d: int, *batch: int, dtype=torch.float64, seed: int = 0):
    """``(*batch, n, d)``: one-hot sequences of length ``d // VOCAB`` flattened, the second equal to the first.

    A ``d`` that is not a multiple of ``VOCAB`` gets zero columns (bad input for a Hamming kernel).
    """
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(VOCAB, (*batch, n, d // VOCAB), generator=g)
    if n > 1:
        idx[..., 1, :] = idx[..., 0, :]  # Hamming distance 0 off the diagonal
    x = torch.nn.functional.one_hot(idx, VOCAB).to(dtype).reshape(*batch, n, VOCAB * (d // VOCAB))
    return torch.nn.functional.pad(x, (0, d % VOCAB))


def index_inputs(num_tasks: int) -> Callable:
    """A generator of ``(*batch, n, d)`` integer task indices in ``[0, num_tasks)`` (as floats)."""

    def inputs(n, d, *batch, dtype=torch.float64, seed=0):
        g = torch.Generator().manual_seed(seed)
        return torch.randint(num_tasks, (*batch, n, d), generator=g).to(dtype)

    return inputs


@dataclasses.dataclass
class KernelCase:
    """How to build one kernel for the conformance checks, and what applies to it.

    Args:
        name: the case's name (a test id).
        build: ``build(d, batch_shape) -> Kernel`` for ``d`` input dimensions.
        supports_batch: the hyperparameters take a ``batch_shape``.
        only_1d: valid (PSD) only on 1-D inputs.
        single_lengthscale: the same parameters for every input dimension (``last_dim_is_batch`` applies).
        inputs: ``inputs(n, d, *batch, dtype=, seed=) -> (*batch, n, d)``.
        d: input dimension (default 3, or 1 if ``only_1d``).
        foreign_params: name prefixes of parameters that are not the kernel's (a likelihood's).
    """

    name: str
    build: Callable[[int, torch.Size], torch.nn.Module]
    supports_batch: bool = True
    only_1d: bool = False
    single_lengthscale: bool = True
    inputs: Callable = randn_inputs
    d: int | None = None
    foreign_params: tuple[str, ...] = ()

    @property
    def dims(self) -> int:
        """The input dimension the case is evaluated in."""
        return self.d if self.d is not None else (1 if self.only_1d else 3)

    def make(self, d: int | None = None, batch_shape=torch.Size(), dtype=torch.float64, seed: int = 1):
        """The kernel, randomised (``seed``) and in ``dtype``."""
        d = self.dims if d is None else d
        return randomise(self.build(d, torch.Size(batch_shape)), seed).to(dtype)

    def x(self, n: int, *batch: int, dtype=torch.float64, seed: int = 0, d: int | None = None) -> torch.Tensor:
        """Inputs ``(*batch, n, d)``."""
        return self.inputs(n, self.dims if d is None else d, *batch, dtype=dtype, seed=seed)

    def own_parameters(self, kernel) -> list[tuple[str, torch.nn.Parameter]]:
        """The kernel's own trainable parameters (not a likelihood's, not frozen ones)."""
        return [
            (n, p) for n, p in kernel.named_parameters() if p.requires_grad and not n.startswith(self.foreign_params)
        ]

    def __repr__(self) -> str:
        return self.name
