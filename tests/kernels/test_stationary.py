"""Stationary kernels against their closed forms in NumPy (R&W 2006, ch. 4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests._tol import assert_close
from torchgp import constraints, kernels, priors
from torchgp.errors import ShapeError

rng = np.random.default_rng(0)
A = rng.normal(size=(6, 2))
B = rng.normal(size=(4, 2))
ELL = np.array([0.7, 1.6])


def _t(a):
    return torch.as_tensor(a, dtype=torch.float64)


def _r(a, b, ell=ELL):
    return np.sqrt((((a[:, None, :] - b[None, :, :]) / ell) ** 2).sum(-1))


def _ard(k):
    k = k.double()
    k.lengthscale = _t(ELL)
    return k


def test_rbf():
    k = _ard(kernels.RBFKernel(ard_num_dims=2))
    assert_close(k(_t(A), _t(B)).to_dense(), np.exp(-0.5 * _r(A, B) ** 2))


@pytest.mark.parametrize(
    "nu, f",
    [
        (0.5, lambda r: np.exp(-r)),
        (1.5, lambda r: (1 + math.sqrt(3) * r) * np.exp(-math.sqrt(3) * r)),
        (2.5, lambda r: (1 + math.sqrt(5) * r + 5 / 3 * r**2) * np.exp(-math.sqrt(5) * r)),
    ],
)
def test_matern(nu, f):
    k = _ard(kernels.MaternKernel(nu=nu, ard_num_dims=2))
    assert_close(k(_t(A), _t(B)).to_dense(), f(_r(A, B)))


def test_matern_rejects_other_nu():
    with pytest.raises(ValueError, match="0.5, 1.5 or 2.5"):
        kernels.MaternKernel(nu=2.0)


def test_rq():
    k = _ard(kernels.RQKernel(ard_num_dims=2))
    k.alpha = 0.8
    assert_close(k(_t(A), _t(B)).to_dense(), (1 + _r(A, B) ** 2 / (2 * 0.8)) ** -0.8)


def test_periodic_gpytorch_convention():
    k = _ard(kernels.PeriodicKernel(ard_num_dims=2))
    k.period_length = _t([1.3, 2.1])
    diff = A[:, None, :] - B[None, :, :]
    expected = np.exp(-2 * (np.sin(np.pi * diff / np.array([1.3, 2.1])) ** 2 / ELL).sum(-1))
    assert_close(k(_t(A), _t(B)).to_dense(), expected)
    x = _t([[0.0], [1.3], [2.6]])
    kp = kernels.PeriodicKernel().double()
    kp.period_length = 1.3
    assert_close(kp(x).to_dense(), torch.ones(3, 3, dtype=torch.float64))  # one period apart: correlation 1


def test_cosine():
    k = kernels.CosineKernel().double()
    k.period_length = 0.9
    a, b = A[:, :1], B[:, :1]
    assert_close(k(_t(a), _t(b)).to_dense(), np.cos(np.pi * np.abs(a - b.T) / 0.9))


def test_spectral_mixture():
    k = kernels.SpectralMixtureKernel(num_mixtures=2, ard_num_dims=2).double()
    w, mu, sig = np.array([0.6, 1.4]), np.array([[0.3, 0.1], [0.05, 0.7]]), np.array([[0.5, 0.2], [0.3, 0.9]])
    k.mixture_weights = _t(w)
    k.mixture_means = _t(mu).unsqueeze(-2)
    k.mixture_scales = _t(sig).unsqueeze(-2)
    tau = A[:, None, :] - B[None, :, :]
    expected = sum(
        w[q] * np.exp(-2 * np.pi**2 * (tau**2 * sig[q] ** 2).sum(-1)) * np.cos(2 * np.pi * (tau * mu[q]).sum(-1))
        for q in range(2)
    )
    assert_close(k(_t(A), _t(B)).to_dense(), expected)


def test_spectral_mixture_initialize_from_data():
    torch.manual_seed(0)
    x = torch.linspace(0, 10, 50, dtype=torch.float64)
    y = torch.sin(2 * x)
    k = kernels.SpectralMixtureKernel(num_mixtures=4).double()
    before = {n: p.clone() for n, p in k.named_parameters()}
    k.initialize_from_data(x, y)
    for n, p in k.named_parameters():
        assert torch.all(torch.isfinite(p)) and not torch.equal(p, before[n]), n
    gap = 10 / 49
    assert torch.all(k.mixture_means <= 0.5 / gap + 1e-9)  # below the Nyquist frequency
    assert_close(k.mixture_weights.sum(), y.std())
    K = k(x.unsqueeze(-1)).to_dense()
    assert torch.linalg.eigvalsh(K).min() > -1e-8 * K.diagonal().max()


@pytest.mark.parametrize(
    "cls", [kernels.RBFKernel, kernels.MaternKernel, kernels.RQKernel, kernels.PeriodicKernel], ids=lambda c: c.__name__
)
def test_lengthscale_prior_constraint_ard_batch(cls):
    prior = priors.GammaPrior(3.0, 6.0)
    k = cls(
        ard_num_dims=3,
        batch_shape=torch.Size([2]),
        lengthscale_prior=prior,
        lengthscale_constraint=constraints.Interval(0.01, 5.0),
    )
    assert k.raw_lengthscale.shape == (2, 1, 3)
    assert isinstance(k.raw_lengthscale_constraint, constraints.Interval)
    assert torch.all(k.lengthscale < 5.0)
    assert [n for n, *_ in k.named_priors()] == ["lengthscale_prior"]
    assert_close(k.log_prior(), prior.log_prob(k.lengthscale).sum())
    with pytest.raises(ShapeError, match="ard_num_dims=3.*2 features"):
        k(torch.randn(4, 2))


def test_active_dims_select_columns():
    X = torch.randn(5, 3, dtype=torch.float64)
    k = kernels.RBFKernel(active_dims=[0, 2], ard_num_dims=2).double()
    ref = kernels.RBFKernel(ard_num_dims=2).double()
    k.lengthscale = _t([0.5, 2.0])
    ref.lengthscale = _t([0.5, 2.0])
    assert_close(k(X).to_dense(), ref(X[:, [0, 2]]).to_dense())
    with pytest.raises(ShapeError, match="active_dims"):
        k(torch.randn(5, 2))
    with pytest.raises(ShapeError, match="must match"):
        kernels.RBFKernel(active_dims=[0, 1], ard_num_dims=3)


def test_stationary_diag_is_one_and_far_points_decorrelate():
    for k in (kernels.RBFKernel(), kernels.MaternKernel(nu=0.5), kernels.MaternKernel(nu=2.5)):
        x = torch.tensor([[0.0], [100.0]], dtype=torch.float64)
        K = k.double()(x).to_dense()
        assert_close(K.diagonal(), torch.ones(2))
        assert K[0, 1] < 1e-6


def test_distances_accurate_at_large_offsets():
    """No catastrophic cancellation in ‖a‖² − 2aᵀb + ‖b‖² far from the origin (Gram path)."""
    from torchgp.kernels import distance

    x = 1e4 + torch.tensor([[0.0], [1e-3], [2e-3]], dtype=torch.float64)
    old = distance._DIRECT_LIMIT
    try:
        distance._DIRECT_LIMIT = 0
        d2 = distance.sq_dist(x, x)
    finally:
        distance._DIRECT_LIMIT = old
    assert_close(d2, (x - x.T) ** 2, loose=1e2)
