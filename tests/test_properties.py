"""Property-based checks (hypothesis) over shapes, batch shapes, dtypes and ``active_dims``, against dense references.

Each test draws a few dozen examples at most (``derandomize``: the same examples on every run).
"""

import math

import pytest
import torch

import torchgp
from tests._tol import assert_close

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FEW = settings(max_examples=25, deadline=None, derandomize=True)

dtypes = st.sampled_from([torch.float32, torch.float64])
batch_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


def _randn(seed, *shape, dtype):
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@FEW
@given(batch=batch_shapes, n=st.integers(1, 6), dtype=dtypes, seed=st.integers(0, 2**16))
def test_multivariate_normal_matches_torch_dense(batch, n, dtype, seed):
    A = _randn(seed, *batch, n, n, dtype=torch.float64)
    cov = A @ A.mT + torch.eye(n, dtype=torch.float64)
    mean = _randn(seed + 1, *batch, n, dtype=torch.float64)
    x = _randn(seed + 2, *batch, n, dtype=torch.float64)
    ours = torchgp.distributions.MultivariateNormal(mean.to(dtype), cov.to(dtype))
    ref = torch.distributions.MultivariateNormal(mean, cov)
    assert ours.batch_shape == ref.batch_shape and ours.event_shape == ref.event_shape
    loose = 100 if dtype == torch.float32 else 1  # float32 log-densities of a few terms of size ~n
    assert_close(ours.log_prob(x.to(dtype)), ref.log_prob(x).to(dtype), loose=loose)
    assert_close(ours.variance, ref.variance.to(dtype), loose=loose)
    assert_close(ours.covariance_matrix, cov.to(dtype), loose=loose)
    assert ours.log_prob(x.to(dtype)).dtype == dtype


def _rbf_dense(X1, X2, ell, s):
    """s² exp(-½ ‖(x - x')/ℓ‖²), written out entry by entry's formula (R&W eq. 4.9)."""
    d2 = (((X1[..., :, None, :] - X2[..., None, :, :]) / ell.unsqueeze(-3)) ** 2).sum(-1)  # ℓ (*batch, 1, d)
    return s * torch.exp(-0.5 * d2)


def _matern_dense(X1, X2, ell, nu):
    """Matérn ν ∈ {1/2, 3/2, 5/2} (R&W eq. 4.17) from the distance r = ‖(x - x')/ℓ‖."""
    r = (((X1[..., :, None, :] - X2[..., None, :, :]) / ell.unsqueeze(-3)) ** 2).sum(-1).clamp_min(0).sqrt()
    if nu == 0.5:
        return torch.exp(-r)
    if nu == 1.5:
        return (1 + math.sqrt(3) * r) * torch.exp(-math.sqrt(3) * r)
    return (1 + math.sqrt(5) * r + 5 / 3 * r**2) * torch.exp(-math.sqrt(5) * r)


kernel_kinds = st.sampled_from(["rbf", "matern0.5", "matern1.5", "matern2.5", "linear"])


@FEW
@given(
    kind=kernel_kinds,
    batch=batch_shapes,
    n=st.integers(1, 5),
    m=st.integers(1, 5),
    d=st.integers(1, 4),
    dtype=dtypes,
    data=st.data(),
)
def test_kernels_match_dense_references_with_active_dims(kind, batch, n, m, d, dtype, data):
    active = data.draw(st.lists(st.integers(0, d - 1), min_size=1, max_size=d, unique=True), label="active_dims")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    k_ard = len(active)
    if kind == "rbf":
        base = torchgp.kernels.RBFKernel(ard_num_dims=k_ard, batch_shape=torch.Size(batch), active_dims=active)
        kernel = torchgp.kernels.ScaleKernel(base, batch_shape=torch.Size(batch))
    elif kind.startswith("matern"):
        base = kernel = torchgp.kernels.MaternKernel(
            nu=float(kind[6:]), ard_num_dims=k_ard, batch_shape=torch.Size(batch), active_dims=active
        )
    else:
        base = kernel = torchgp.kernels.LinearKernel(
            ard_num_dims=k_ard, batch_shape=torch.Size(batch), active_dims=active
        )
    kernel = kernel.to(dtype)
    with torch.no_grad():
        for p in kernel.parameters():
            p.copy_(_randn(seed, *p.shape, dtype=dtype) * 0.5)
    X1 = _randn(seed + 1, *batch, n, d, dtype=dtype)
    X2 = _randn(seed + 2, *batch, m, d, dtype=dtype)
    A1, A2 = X1[..., active].double(), X2[..., active].double()
    if kind == "rbf":
        ell = base.lengthscale.detach().double()  # (*batch, 1, k)
        s = kernel.outputscale.detach().double()[..., None, None]
        ref = _rbf_dense(A1, A2, ell, s)
    elif kind.startswith("matern"):
        ref = _matern_dense(A1, A2, base.lengthscale.detach().double(), float(kind[6:]))
    else:
        ref = (A1 * base.variance.detach().double()) @ A2.mT
    with torch.no_grad():
        K12 = kernel(X1, X2).to_dense()
        K11 = kernel(X1).to_dense()
        diag = kernel(X1, diag=True)
    loose = 10 if dtype == torch.float32 else 1
    assert K12.shape == (*batch, n, m) and K12.dtype == dtype
    assert_close(K12, ref.to(dtype), loose=loose)
    assert_close(diag, torch.diagonal(K11, dim1=-2, dim2=-1), loose=loose)  # diag = diagonal of the full matrix
    assert_close(K11, K11.mT, loose=loose)  # symmetric
