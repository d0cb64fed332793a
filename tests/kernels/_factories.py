"""Kernel cases for the conformance suite: every kernel class of ``torchgp.kernels``, found automatically.

:data:`CASES` is :data:`TABLE` (constructors for kernels that need arguments, a base kernel, or
special inputs, and extra variants of the others) plus one default case ``cls(batch_shape=b)`` for
every discovered kernel class the table does not build. A class that cannot be built that way
fails every conformance test until the table says how to build it: a new kernel is checked without
being listed, and the table holds constructors, not exemptions.

Each :class:`KernelCase` builds a kernel for ``d`` input dimensions and a ``batch_shape``, with its
hyperparameters moved away from their defaults (random, seeded) so that wrong broadcasting or a
hyperparameter that is ignored shows up.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Callable

import torch

import torchgp
from torchgp import kernels as K

# Abstract bases: evaluating them raises NotImplementedError (checked by the suite), so they are no kernels.
ABSTRACT = ("Kernel", "StationaryKernel", "KeOpsKernel")


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


# ---------------------------------------------------------------------------- input generators
def randn_inputs(n, d, *batch, dtype=torch.float64, seed=0, scale=1.0):
    """``(*batch, n, d)`` standard normal inputs (times ``scale``)."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*batch, n, d, generator=g, dtype=dtype)


def ball_inputs(n, d, *batch, dtype=torch.float64, seed=0):
    """Points inside the unit ball (norms in (0, 0.9)), for the cylindrical kernel."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, n, d, generator=g, dtype=dtype)
    radius = 0.1 + 0.8 * torch.rand(*batch, n, 1, generator=g, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True) * radius


VOCAB = 3


def one_hot_inputs(n, d, *batch, dtype=torch.float64, seed=0):
    """One-hot sequences of length ``d / VOCAB`` flattened to ``d`` columns, with a repeated sequence."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(VOCAB, (*batch, n, d // VOCAB), generator=g)
    if n > 1:
        idx[..., 1, :] = idx[..., 0, :]  # Hamming distance 0 off the diagonal
    x = torch.nn.functional.one_hot(idx, VOCAB).to(dtype).reshape(*batch, n, VOCAB * (d // VOCAB))
    return torch.nn.functional.pad(x, (0, d % VOCAB))  # d not a multiple of VOCAB: zero columns (bad input)


def index_inputs(num_tasks):
    def inputs(n, d, *batch, dtype=torch.float64, seed=0):
        g = torch.Generator().manual_seed(seed)
        return torch.randint(num_tasks, (*batch, n, d), generator=g).to(dtype)

    return inputs


@dataclasses.dataclass
class KernelCase:
    name: str
    build: Callable[[int, torch.Size], K.Kernel]
    supports_batch: bool = True  # hyperparameters take a batch_shape
    only_1d: bool = False  # valid (PSD) only on 1-D inputs
    single_lengthscale: bool = True  # same parameters for every input dim (last_dim_is_batch is meaningful)
    inputs: Callable = randn_inputs  # (n, d, *batch, dtype=, seed=) -> (*batch, n, d)
    d: int | None = None  # input dimension (default 3, or 1 if only_1d)
    foreign_params: tuple[str, ...] = ()  # name prefixes of parameters that are not the kernel's (a likelihood's)

    @property
    def dims(self) -> int:
        return self.d if self.d is not None else (1 if self.only_1d else 3)

    def make(self, d: int | None = None, batch_shape=torch.Size(), dtype=torch.float64, seed: int = 1) -> K.Kernel:
        d = self.dims if d is None else d
        return randomise(self.build(d, torch.Size(batch_shape)), seed).to(dtype)

    def x(self, n: int, *batch: int, dtype=torch.float64, seed: int = 0, d: int | None = None) -> torch.Tensor:
        return self.inputs(n, self.dims if d is None else d, *batch, dtype=dtype, seed=seed)

    def __repr__(self) -> str:
        return self.name


def _sm(d, b):
    return K.SpectralMixtureKernel(num_mixtures=3, ard_num_dims=d, batch_shape=b)


def _inducing(d, b):
    g = torch.Generator().manual_seed(11)
    Z = torch.randn(4, d, generator=g)
    k = K.InducingPointKernel(K.ScaleKernel(K.RBFKernel()), Z, torchgp.likelihoods.GaussianLikelihood())
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
    KernelCase("user_forward_only", lambda d, b: UserKernel(), supports_batch=False),
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
        lambda d, b: K.DistributionalInputKernel(torchgp.kernels.distributional.symmetrized_kl, batch_shape=b),
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
        # last_dim_is_batch puts d just before (n, m): a base batch (*b, 1) shares one lengthscale over the columns
        lambda d, b: K.NewtonGirardAdditiveKernel(
            K.RBFKernel(batch_shape=(*b, 1)), num_dims=d, max_degree=2, batch_shape=b
        ),
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


def discover() -> list[type]:
    """Every concrete kernel class of ``torchgp.kernels``: its ``__all__`` and the ``Kernel`` subclasses of its modules.

    Every module of the package is imported first, so a kernel file not (yet) exported is found too,
    whatever else the test session imported.
    """
    for info in pkgutil.iter_modules(K.__path__, prefix="torchgp.kernels."):
        importlib.import_module(info.name)
    found = {getattr(K, name) for name in K.__all__}
    stack = [K.Kernel]
    while stack:
        cls = stack.pop()
        found.add(cls)
        stack.extend(cls.__subclasses__())
    return sorted(
        (
            c
            for c in found
            if inspect.isclass(c)
            and issubclass(c, K.Kernel)
            and c.__module__.startswith("torchgp.kernels")
            and not c.__name__.startswith("_")
            and c.__name__ not in ABSTRACT
        ),
        key=lambda c: (c.__module__, c.__name__),
    )


def _built_types(case: KernelCase) -> type | None:
    try:
        return type(case.build(case.dims, torch.Size()))
    except Exception:
        return None


def _default_case(cls: type) -> KernelCase:
    def build(d, b):
        try:
            return cls(batch_shape=b)
        except TypeError as err:
            raise TypeError(
                f"The conformance suite cannot build {cls.__module__}.{cls.__name__} as cls(batch_shape=b) ({err}); "
                "add a KernelCase saying how to build it to TABLE in tests/kernels/_factories.py."
            ) from err

    return KernelCase(f"auto_{cls.__name__}", build)


COVERED = {t for t in map(_built_types, TABLE) if t is not None}
DISCOVERED = discover()
CASES = TABLE + [_default_case(c) for c in DISCOVERED if c not in COVERED]
CASE_IDS = [c.name for c in CASES]
