"""msMINRES against dense solves, CIQ ``K^{±1/2} b`` against the eigendecomposition, CIQ gradients."""

from __future__ import annotations

import pytest
import torch

from tests._tol import assert_close
from torchgp import settings
from torchgp.linalg.minres import (
    ciq_mvn_samples,
    ciq_weights_and_shifts,
    contour_integral_quad,
    lanczos_extreme_eigenvalues,
    minres,
)

D = torch.float64


def _well(n=30, batch=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(*batch, n, n, generator=g, dtype=D)
    return A @ A.mT / n + 0.05 * torch.eye(n, dtype=D)


def _ill(n=40, ls=0.15, jitter=1e-6):
    x = torch.linspace(0, 1, n, dtype=D).unsqueeze(-1)
    return torch.exp(-0.5 * (x - x.mT) ** 2 / ls**2) + jitter * torch.eye(n, dtype=D)


def _dense_power(K, B, p):
    e, U = torch.linalg.eigh(K)
    return U @ (e.pow(p).unsqueeze(-1) * (U.mT @ B))


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_msminres_each_shift_matches_dense_solve():
    K = _well(25, batch=(2,))
    B = torch.randn(2, 25, 3, generator=torch.Generator().manual_seed(1), dtype=D)
    shifts = torch.tensor([0.0, 0.03, 1.0, 20.0], dtype=D)
    X = minres(lambda V: K @ V, B, shifts, tol=1e-13)
    assert X.shape == (4, 2, 25, 3)
    eye = torch.eye(25, dtype=D)
    for q in range(4):
        assert_close(X[q], torch.linalg.solve(K + shifts[q] * eye, B))


def test_msminres_batch_dependent_shifts_and_plain_minres():
    K = _well(20, batch=(3,))
    B = torch.randn(3, 20, 2, generator=torch.Generator().manual_seed(2), dtype=D)
    shifts = torch.rand(5, 3, generator=torch.Generator().manual_seed(3), dtype=D)
    X = minres(lambda V: K @ V, B, shifts, tol=1e-13)
    eye = torch.eye(20, dtype=D)
    for q in range(5):
        assert_close(X[q], torch.linalg.solve(K + shifts[q].reshape(3, 1, 1) * eye, B))
    assert_close(minres(lambda V: K @ V, B, tol=1e-13), torch.linalg.solve(K, B))


def test_msminres_indefinite_shifted_system():
    # MINRES needs symmetry only: K - 0.3 I has eigenvalues of both signs
    K = _well(15)
    B = torch.randn(15, 1, generator=torch.Generator().manual_seed(4), dtype=D)
    e = torch.linalg.eigvalsh(K)
    shift = -(e[5] + e[6]) / 2
    X = minres(lambda V: K @ V, B, shift.reshape(1), tol=1e-13)
    assert_close(X[0], torch.linalg.solve(K + shift * torch.eye(15, dtype=D), B), loose=10)


def test_minres_tolerance_setting_controls_accuracy():
    K = _ill(40)
    B = torch.randn(40, 1, generator=torch.Generator().manual_seed(5), dtype=D)
    ref = torch.linalg.solve(K + 1e-3 * torch.eye(40, dtype=D), B)
    shifts = torch.tensor([1e-3], dtype=D)
    with settings.minres_tolerance(1e-2):
        loose = minres(lambda V: K @ V, B, shifts)[0]
    with settings.minres_tolerance(1e-12):
        tight = minres(lambda V: K @ V, B, shifts)[0]
    assert _rel(tight, ref) < 1e-8 < _rel(loose, ref)


def test_lanczos_extreme_eigenvalues_bracket_spectrum():
    K = _well(30, batch=(2,))
    lo, hi = lanczos_extreme_eigenvalues(lambda V: K @ V, 30, torch.Size([2]), D)
    e = torch.linalg.eigvalsh(K)
    assert_close(hi, e[..., -1], loose=1e2)
    assert_close(lo, e[..., 0], loose=1e2)


def test_quadrature_is_exact_for_scalars():
    # Σ w_q / (λ + σ_q) = λ^{-1/2} for every λ in [λ_min, λ_max]
    lam = torch.logspace(-6, 2, 50, dtype=D)
    w, s = ciq_weights_and_shifts(torch.tensor(1e-6, dtype=D), torch.tensor(1e2, dtype=D), 20)
    approx = (w.unsqueeze(-1) / (lam + s.unsqueeze(-1))).sum(0)
    assert _rel(approx, lam.rsqrt()) < 1e-7


@pytest.mark.parametrize("make", [_well, _ill], ids=["well", "ill"])
@pytest.mark.parametrize("inverse", [True, False], ids=["inv_sqrt", "sqrt"])
def test_ciq_matches_eigh_square_root(make, inverse):
    K = make()
    n = K.shape[-1]
    B = torch.randn(n, 4, generator=torch.Generator().manual_seed(6), dtype=D)
    with settings.minres_tolerance(1e-10):
        out = contour_integral_quad(K, B, inverse=inverse)  # default Q = settings.num_contour_quadrature
    assert _rel(out, _dense_power(K, B, -0.5 if inverse else 0.5)) < 1e-4


def test_ciq_batched_and_vector_rhs():
    K = _well(12, batch=(3,))
    b = torch.randn(3, 12, generator=torch.Generator().manual_seed(7), dtype=D)
    with settings.minres_tolerance(1e-10):
        out = contour_integral_quad(K, b)
    assert out.shape == (3, 12)
    assert _rel(out, _dense_power(K, b.unsqueeze(-1), -0.5).squeeze(-1)) < 1e-4


def test_num_contour_quadrature_setting_is_used():
    K = _ill(40)
    B = torch.randn(40, 2, generator=torch.Generator().manual_seed(8), dtype=D)
    ref = _dense_power(K, B, -0.5)
    with settings.minres_tolerance(1e-12):
        with settings.num_contour_quadrature(4):
            coarse = contour_integral_quad(K, B)
        with settings.num_contour_quadrature(25):
            fine = contour_integral_quad(K, B)
    assert _rel(fine, ref) < 1e-7 < _rel(coarse, ref)


@pytest.mark.parametrize("inverse", [True, False], ids=["inv_sqrt", "sqrt"])
def test_ciq_gradcheck(inverse):
    g = torch.Generator().manual_seed(9)
    A = torch.randn(5, 5, generator=g, dtype=D, requires_grad=True)
    B = torch.randn(5, 2, generator=g, dtype=D, requires_grad=True)

    def f(A, B):
        K = A @ A.mT + 0.5 * torch.eye(5, dtype=D)  # a symmetric positive definite path
        return contour_integral_quad(K, B, inverse=inverse, num_contour_quadrature=30, tol=1e-14)

    assert torch.autograd.gradcheck(f, (A, B), atol=1e-6)


def test_ciq_samples_have_the_covariance():
    K = _well(6)
    eps = torch.randn(2000, 6, generator=torch.Generator().manual_seed(10), dtype=D)
    with settings.minres_tolerance(1e-10):
        samples = ciq_mvn_samples(K, eps)
    assert samples.shape == (2000, 6)
    # symmetric square root applied to each draw: exactly K^{1/2} ε
    assert _rel(samples, (_dense_power(K, eps.mT, 0.5)).mT) < 1e-4
    emp = samples.mT @ samples / 2000
    assert (emp - K).abs().max() < 0.2 * K.diagonal().max()
