"""``linalg.gaussian_log_prob``: the Gaussian log density as one autograd node on the Cholesky path."""

from __future__ import annotations

import math

import pytest
import torch

from tests._tol import assert_close
from torchgp import settings
from torchgp.linalg import AddedDiagOperator, DenseOperator
from torchgp.linalg.cholesky import cholesky_inverse_plus_outer
from torchgp.linalg.inv_quad_logdet import CholeskyGaussianLogProb, gaussian_log_prob


def _inputs(*batch, n=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(*batch, n, n, generator=g, dtype=dtype)
    noise = torch.rand(*batch, n, generator=g, dtype=dtype) + 0.1
    y = torch.randn(n, generator=g, dtype=dtype)  # unbatched: broadcasts against the batched mean
    mean = torch.randn(*batch, n, generator=g, dtype=dtype)
    return A, noise, y, mean


def _reference(K, noise, y, mean, scale):
    """``scale · log N(y; μ, K + diag σ²)`` by plain autograd through ``torch.distributions``."""
    A = K + torch.diag_embed(noise)
    return scale * torch.distributions.MultivariateNormal(mean, A).log_prob(y)


@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
@pytest.mark.parametrize("scale", [1.0, 1.0 / 6])
def test_value_and_gradients_match_plain_autograd(batch, scale):
    A, noise, y, mean = _inputs(*batch)
    results = []
    for fn in ("ours", "reference"):
        leaves = [t.clone().requires_grad_(True) for t in (A, noise, y, mean)]
        A_, noise_, y_, mean_ = leaves
        K = A_ @ A_.mT + torch.eye(6, dtype=torch.float64)
        if fn == "ours":
            out = gaussian_log_prob(AddedDiagOperator(DenseOperator(K), noise_), y_, mean_, scale)
        else:
            out = _reference(K, noise_, y_, mean_, scale)
        w = torch.linspace(0.5, 1.5, out.numel(), dtype=torch.float64).reshape(out.shape)
        (w * out).sum().backward()
        results.append((out.detach(), *(t.grad for t in leaves)))
    for ours, ref in zip(*results):
        assert_close(ours, ref)


def test_potri_sized_matrix_matches_plain_autograd():
    """n = 400 in float64: the backward folds its weights into LAPACK's potri pass (CPU) instead of one scaling."""
    A, noise, y, mean = _inputs(n=400, seed=5)
    results = []
    for fn in ("ours", "reference"):
        leaves = [t.clone().requires_grad_(True) for t in (A, noise, mean)]
        K = leaves[0] @ leaves[0].mT / 400 + torch.eye(400, dtype=torch.float64)
        if fn == "ours":
            out = gaussian_log_prob(AddedDiagOperator(DenseOperator(K), leaves[1]), y, leaves[2], 1.0 / 400)
        else:
            out = _reference(K, leaves[1], y, leaves[2], 1.0 / 400)
        out.backward()
        results.append((out.detach(), *(t.grad for t in leaves)))
    for ours, ref in zip(*results):
        assert_close(ours, ref)


def test_one_node_on_the_cholesky_path():
    A, noise, y, mean = _inputs()
    K = (A @ A.mT + torch.eye(6, dtype=torch.float64)).requires_grad_(True)
    out = gaussian_log_prob(AddedDiagOperator(DenseOperator(K), noise), y, mean.requires_grad_(True))
    assert type(out.grad_fn).__name__ == "CholeskyGaussianLogProbBackward"


def test_gradcheck_float64():
    A, noise, y, mean = _inputs(2, n=5)
    K = A @ A.mT + torch.eye(5, dtype=torch.float64)

    def f(K, noise, y, mean):
        Ks = 0.5 * (K + K.mT)  # the node reads one triangle: perturb symmetrically
        return CholeskyGaussianLogProb.apply(Ks, noise, y, mean, -0.25, 0.3)

    leaves = [t.clone().requires_grad_(True) for t in (K, noise, y, mean)]
    assert torch.autograd.gradcheck(f, leaves)


def test_create_graph_first_derivatives_equal():
    A, noise, y, mean = _inputs(2)
    K = A @ A.mT + torch.eye(6, dtype=torch.float64)
    grads = []
    for create_graph in (False, True):
        leaves = [t.clone().requires_grad_(True) for t in (K, noise, mean)]
        out = CholeskyGaussianLogProb.apply(leaves[0], leaves[1], y, leaves[2], -0.5, 0.0).sum()
        grads.append(torch.autograd.grad(out, leaves, create_graph=create_graph))
    for a, b in zip(*grads):
        assert_close(a.detach(), b)


@pytest.mark.parametrize("case", ["skip_logdet", "solve_dtype", "mixed_dtype"])
def test_other_routes_agree(case):
    A, noise, y, mean = _inputs()
    K = A @ A.mT + torch.eye(6, dtype=torch.float64)
    op = AddedDiagOperator(DenseOperator(K), noise)
    n = 6
    if case == "skip_logdet":
        with settings.skip_logdet_forward(True):
            out = gaussian_log_prob(op, y, mean)
        ref = _reference(K, noise, y, mean, 1.0)
        logdet = torch.linalg.slogdet(K + torch.diag(noise))[1]
        assert_close(out, ref + 0.5 * logdet)  # the log-determinant's value dropped, as in inv_quad_logdet
    elif case == "solve_dtype":
        op32 = AddedDiagOperator(DenseOperator(K.float()), noise.float())
        with settings.solve_dtype(torch.float64):
            out = gaussian_log_prob(op32, y.float(), mean.float())
        assert out.dtype == torch.float32
        assert_close(out, _reference(K, noise, y, mean, 1.0).float())
    else:
        out = gaussian_log_prob(op, y.float(), mean)  # float32 values against a float64 density: promoted
        assert out.dtype == torch.float64
        assert_close(out, _reference(K, noise, y.float().double(), mean, 1.0))
    assert math.isfinite(float(out)) and n == op.shape[-1]


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
@pytest.mark.parametrize("scalar_weights", [True, False, "float"])
def test_cholesky_inverse_plus_outer_in_place_routes(batch, scalar_weights):
    g = torch.Generator().manual_seed(3)
    A = torch.randn(*batch, 7, 7, generator=g, dtype=torch.float64)
    S = A @ A.mT + 7 * torch.eye(7, dtype=torch.float64)
    L = torch.linalg.cholesky(S)
    V = torch.randn(*batch, 7, 2, generator=g, dtype=torch.float64)
    shape = () if scalar_weights else batch
    s = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
    w = -torch.rand(shape, generator=g, dtype=torch.float64)
    if scalar_weights == "float":  # a Python float weight: the GEMM's α
        w = torch.tensor(-0.75, dtype=torch.float64)
    with torch.no_grad():
        out = cholesky_inverse_plus_outer(L, s, V, -0.75 if scalar_weights == "float" else w)
    ref = torch.linalg.inv(S) * s[..., None, None] + (V * w[..., None, None]) @ V.mT
    assert out.shape == ref.shape
    assert_close(out, ref)


def test_value_of_another_size_is_refused_naming_n():
    from torchgp.errors import ShapeError

    K = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ShapeError, match="must end in n = 3"):
        gaussian_log_prob(K, torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ShapeError, match="must end in n = 3"):
        gaussian_log_prob(K, torch.zeros(3, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
