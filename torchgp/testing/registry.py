"""Constructors of the kernels that cannot be built as ``cls(batch_shape=b)``, and variants of the others.

:data:`TABLE` holds the built-in cases; :func:`register_kernel_case` adds one for a kernel defined elsewhere
(a user's, or a new file of ``torchgp.kernels``). :func:`torchgp.testing.kernel_cases` adds a default case
``cls(batch_shape=b)`` for every discovered kernel class that no registered case builds: the table holds
constructors, not exemptions.
"""

from __future__ import annotations

import torch

from torchgp import kernels as K
from torchgp.kernels.distributional import symmetrized_kl
from torchgp.likelihoods import GaussianLikelihood
from torchgp.testing.cases import VOCAB, KernelCase, ball_inputs, index_inputs, one_hot_inputs, randn_inputs

__all__ = ["TABLE", "register_kernel_case", "registered_cases"]


class _UserKernel(K.Kernel):
    """A kernel written the way users write them: only ``forward(x1, x2)``, plain parameters."""

    def __init__(self, param1=0.7, param2=1.3):
        super().__init__()
        self.param1 = torch.nn.Parameter(torch.tensor(param1))
        self.param2 = torch.nn.Parameter(torch.tensor(param2))

    def forward(self, x1, x2):
        return torch.exp(-(torch.cdist(x1, x2) ** 2) / (2 * self.param1)) * self.param2


def _sm(d, b):
    return K.SpectralMixtureKernel(num_mixtures=3, ard_num_dims=d, batch_shape=b)


def _inducing(d, b):
    g = torch.Generator().manual_seed(11)
    Z = torch.randn(4, d, generator=g)
    k = K.InducingPointKernel(K.ScaleKernel(K.RBFKernel()), Z, GaussianLikelihood())
    return k.eval()  # train mode evaluates k(X, X) only (and records the SGPR trace term)


TABLE = [
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
    KernelCase(
        "scale_active_dims",
        lambda d, b: K.ScaleKernel(K.RBFKernel(ard_num_dims=2, batch_shape=b), active_dims=[0, d - 1]),
        single_lengthscale=False,
    ),
    KernelCase("user_forward_only", lambda d, b: _UserKernel(), supports_batch=False),
    KernelCase("index", lambda d, b: K.IndexKernel(num_tasks=3, rank=2, batch_shape=b), inputs=index_inputs(3), d=1),
    KernelCase(
        "arc",
        lambda d, b: K.ArcKernel(K.MaternKernel(nu=2.5, batch_shape=b), ard_num_dims=d, batch_shape=b),
        single_lengthscale=False,
    ),
    KernelCase("constant", lambda d, b: K.ConstantKernel(batch_shape=b)),
    KernelCase(
        "cylindrical",
        lambda d, b: K.CylindricalKernel(3, K.MaternKernel(nu=2.5, batch_shape=b), batch_shape=b),
        inputs=ball_inputs,
        single_lengthscale=False,
    ),
    KernelCase(
        "distributional",
        lambda d, b: K.DistributionalInputKernel(symmetrized_kl, batch_shape=b),
        d=4,
        single_lengthscale=False,
    ),
    KernelCase(
        "gaussian_sym_kl", lambda d, b: K.GaussianSymmetrizedKLKernel(batch_shape=b), d=4, single_lengthscale=False
    ),
    KernelCase(
        "hamming",
        lambda d, b: K.HammingIMQKernel(vocab_size=VOCAB, batch_shape=b),
        inputs=one_hot_inputs,
        d=4 * VOCAB,
        single_lengthscale=False,
    ),
    KernelCase(
        "newton_girard",
        lambda d, b: K.NewtonGirardAdditiveKernel(K.RBFKernel(batch_shape=b), num_dims=d, max_degree=2, batch_shape=b),
        single_lengthscale=False,
    ),
    *(
        KernelCase(
            f"piecewise_q{q}",
            lambda d, b, q=q: K.PiecewisePolynomialKernel(q=q, ard_num_dims=d, batch_shape=b),
            inputs=lambda *a, **kw: randn_inputs(*a, **kw, scale=0.3),  # inside the support r < 1
            single_lengthscale=False,
        )
        for q in (0, 1, 2, 3)
    ),
    KernelCase(
        "spectral_delta",
        lambda d, b: K.SpectralDeltaKernel(num_dims=d, num_deltas=5, batch_shape=b),
        single_lengthscale=False,
    ),
    KernelCase("rff", lambda d, b: K.RFFKernel(num_samples=6, num_dims=d, batch_shape=b), single_lengthscale=False),
    KernelCase("inducing_point", _inducing, supports_batch=False, foreign_params=("likelihood.",)),
    KernelCase(
        "multitask",
        lambda d, b: K.MultitaskKernel(K.RBFKernel(batch_shape=b), num_tasks=2, rank=1, batch_shape=b),
        single_lengthscale=False,
    ),
    KernelCase("rbf_grad", lambda d, b: K.RBFKernelGrad(batch_shape=b), single_lengthscale=False),
    KernelCase("rbf_gradgrad", lambda d, b: K.RBFKernelGradGrad(batch_shape=b), single_lengthscale=False),
    KernelCase("matern52_grad", lambda d, b: K.Matern52KernelGrad(batch_shape=b), single_lengthscale=False),
    KernelCase(
        "polynomial_grad", lambda d, b: K.PolynomialKernelGrad(power=2, batch_shape=b), single_lengthscale=False
    ),
    KernelCase(
        "lcm",
        lambda d, b: K.LCMKernel([K.RBFKernel(), K.MaternKernel(nu=1.5)], num_tasks=2),
        supports_batch=False,
        single_lengthscale=False,
    ),
    KernelCase(
        "grid",
        lambda d, b: K.GridKernel(
            K.ScaleKernel(K.RBFKernel(ard_num_dims=d, batch_shape=b), batch_shape=b),
            [torch.linspace(-1, 1, 3 + i) for i in range(d)],
        ),
        single_lengthscale=False,
    ),
    KernelCase(
        "grid_interpolation",
        lambda d, b: K.GridInterpolationKernel(
            K.ScaleKernel(K.RBFKernel(ard_num_dims=d, batch_shape=b), batch_shape=b),
            grid_size=12,
            grid_bounds=[(-5.0, 5.0)] * d,
        ),
        single_lengthscale=False,
        d=2,
    ),
    KernelCase(
        "additive_structure_ski",
        lambda d, b: K.AdditiveStructureKernel(
            K.GridInterpolationKernel(K.RBFKernel(batch_shape=b), 40, grid_bounds=[(-5.0, 5.0)]), num_dims=d
        ),
        single_lengthscale=False,
    ),
    KernelCase(
        "additive_structure",
        lambda d, b: K.AdditiveStructureKernel(K.MaternKernel(nu=1.5, batch_shape=(*b, d)), num_dims=d),
        single_lengthscale=False,
    ),
    KernelCase(
        "product_structure",
        lambda d, b: K.ProductStructureKernel(K.PeriodicKernel(batch_shape=b), num_dims=d),
        single_lengthscale=False,
    ),
    KernelCase(
        "multi_device",
        lambda d, b: K.MultiDeviceKernel(
            K.ScaleKernel(K.RBFKernel(ard_num_dims=d, batch_shape=b), batch_shape=b), ["cpu", "cpu", "cpu"]
        ),
        single_lengthscale=False,
    ),
    KernelCase(
        "grid_interpolation_1d",
        lambda d, b: K.GridInterpolationKernel(K.MaternKernel(nu=2.5, batch_shape=b), 30, grid_bounds=[(-4.0, 4.0)]),
        single_lengthscale=False,
        only_1d=True,
    ),
]

_REGISTERED: list[KernelCase] = []


def register_kernel_case(case: KernelCase) -> KernelCase:
    """Say how to build a kernel for the conformance checks (a kernel that needs constructor arguments).

    Args:
        case: the :class:`~torchgp.testing.KernelCase`; its ``build(d, batch_shape)`` returns the kernel.

    Returns:
        ``case``, now part of :func:`registered_cases` (and so of :func:`torchgp.testing.kernel_cases`).

    Example:
        >>> from torchgp.testing import KernelCase, register_kernel_case
        >>> from torchgp.kernels import PolynomialKernel
        >>> _ = register_kernel_case(KernelCase("poly3", lambda d, b: PolynomialKernel(power=3, batch_shape=b)))
    """
    if not isinstance(case, KernelCase):
        raise TypeError(f"register_kernel_case takes a torchgp.testing.KernelCase; got {type(case).__name__}.")
    if any(c.name == case.name for c in TABLE + _REGISTERED):
        raise ValueError(f"a kernel case named {case.name!r} exists already; give the new one another name.")
    _REGISTERED.append(case)
    return case


def registered_cases() -> list[KernelCase]:
    """The built-in :data:`TABLE` and the cases added by :func:`register_kernel_case`."""
    return TABLE + _REGISTERED
