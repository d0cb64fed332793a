"""Behaviour of the newer kernels beyond the shared contract: closed forms, limits, errors, options."""

from __future__ import annotations

import math

import gpytorch
import numpy as np
import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp import kernels as K

DT = torch.float64


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


# ---------------------------------------------------------------------------- piecewise polynomial
@pytest.mark.parametrize("q", [0, 1, 2, 3])
@pytest.mark.parametrize("D", [1, 2, 3])
def test_piecewise_polynomial_is_rw_eq_4_21(q, D):
    k = K.PiecewisePolynomialKernel(q=q).to(DT)
    k.lengthscale = 1.3
    X = 0.5 * _randn(8, D)
    r = np.linalg.norm((X[:, None, :] - X[None, :, :]).numpy(), axis=-1) / 1.3
    j = D // 2 + q + 1
    poly = {  # R&W (2006) eq. 4.21, written from the book's polynomials times their denominators
        0: np.ones_like(r),
        1: (j + 1) * r + 1,
        2: ((j**2 + 4 * j + 3) * r**2 + (3 * j + 6) * r + 3) / 3,
        3: ((j**3 + 9 * j**2 + 23 * j + 15) * r**3 + (6 * j**2 + 36 * j + 45) * r**2 + (15 * j + 45) * r + 15) / 15,
    }[q]
    expected = np.maximum(1 - r, 0) ** (j + q) * poly
    assert_close(k(X).to_dense(), expected)
    assert (expected == 0).any() and (expected > 0).sum() > 8  # both sides of the support are exercised


def test_piecewise_polynomial_rejects_bad_q():
    with pytest.raises(ValueError, match="q must be"):
        K.PiecewisePolynomialKernel(q=4)


# ---------------------------------------------------------------------------- RFF
def test_rff_converges_to_rbf():
    X = _randn(6, 2)
    rbf = K.RBFKernel().to(DT)
    rbf.lengthscale = 0.8
    errs = []
    for D in (50, 5000):
        torch.manual_seed(0)
        k = K.RFFKernel(num_samples=D, num_dims=2).to(DT)
        k.lengthscale = 0.8
        errs.append((k(X).to_dense() - rbf(X).to_dense()).abs().max().item())
    # Monte Carlo error ~ 1/sqrt(D): 10x smaller for 100x more samples (a wide margin either side)
    assert errs[1] < 0.05 and errs[1] < errs[0] / 3


def test_rff_matrix_is_a_low_rank_root_with_its_features():
    k = K.RFFKernel(num_samples=4, num_dims=3).to(DT)
    X = _randn(10, 3)
    out = k(X)
    assert isinstance(out, torchgp.linalg.operators.LowRankRootOperator)
    Z = out.R
    assert Z.shape == (10, 8)
    # Rahimi & Recht: z(x) = [cos(Ωᵀx/ℓ), sin(Ωᵀx/ℓ)] / sqrt(D)
    proj = (X / k.lengthscale) @ k.randn_weights
    assert_close(Z, torch.cat([proj.cos(), proj.sin()], -1) / 2)
    assert_close(out.to_dense(), k(X, X.clone()).to_dense())


def test_rff_infers_num_dims_and_resamples():
    k = K.RFFKernel(num_samples=5).to(DT)
    X = _randn(4, 3)
    K1 = k(X).to_dense()
    assert k.randn_weights.shape == (3, 5) and k.randn_weights.dtype == DT
    assert "randn_weights" in k.state_dict()
    assert_close(k(X).to_dense(), K1)  # frequencies are fixed between calls
    old = k.randn_weights.clone()
    k.resample(torch.Generator().manual_seed(3))
    assert k.randn_weights.shape == old.shape and not torch.equal(k.randn_weights, old)
    assert not torch.allclose(k(X).to_dense(), K1)
    with pytest.raises(torchgp.errors.ShapeError, match="num_dims=2"):
        k(_randn(4, 2)).to_dense()


def test_rff_state_dict_from_gpytorch():
    g = gpytorch.kernels.RFFKernel(num_samples=3, num_dims=2, batch_shape=torch.Size([2])).to(DT)
    t = K.RFFKernel(num_samples=3, num_dims=2, batch_shape=torch.Size([2])).to(DT)
    t.load_state_dict(g.state_dict())
    assert torch.equal(t.randn_weights, g.randn_weights)
    X = _randn(2, 4, 2)
    assert_close(t(X).to_dense(), g(X).to_dense())


# ---------------------------------------------------------------------------- the others
def test_constant_kernel_is_its_constant_everywhere():
    k = K.ConstantKernel(batch_shape=torch.Size([2])).to(DT)
    k.constant = torch.tensor([[0.3], [2.0]], dtype=DT)
    out = k(_randn(4, 2), _randn(3, 2)).to_dense()
    assert out.shape == (2, 4, 3)
    assert_close(out, torch.tensor([0.3, 2.0], dtype=DT)[:, None, None].expand(2, 4, 3))
    # a constant added to a kernel: the level far from the data stays uncertain
    assert_close(
        (K.RBFKernel() + K.ConstantKernel()).to(DT)(torch.tensor([[0.0], [50.0]], dtype=DT)).to_dense()[0, 1],
        torch.tensor(math.log(2), dtype=DT),
    )


def test_arc_kernel_fixes_the_base_lengthscale_and_masks_inactive_columns():
    base = K.RBFKernel()
    k = K.ArcKernel(base, delta_func=lambda x: (x > 0).to(x.dtype), ard_num_dims=2).to(DT)
    assert_close(base.lengthscale, torch.ones(1, 1, dtype=DT))
    assert not base.raw_lengthscale.requires_grad
    X = torch.tensor([[-1.0, 0.5], [-2.0, 0.5], [1.0, 0.5]], dtype=DT)
    Kx = k(X).to_dense()
    assert_close(Kx[0, 1], torch.tensor(1.0, dtype=DT))  # first column inactive for both: same embedding
    assert Kx[0, 2] < 1
    e = k.embedding(X)
    assert e.shape == (3, 4) and torch.all(e[:2, [0, 2]] == 0)


def test_cylindrical_kernel_refuses_points_outside_the_unit_ball():
    k = K.CylindricalKernel(3, K.RBFKernel())
    with pytest.raises(torchgp.errors.InputError, match="unit ball"):
        k(torch.tensor([[0.5, 0.5], [1.0, 1.0]])).to_dense()


def test_hamming_counts_differing_positions():
    k = K.HammingIMQKernel(vocab_size=3).to(DT)
    k.alpha, k.beta = 0.5, 2.0
    seqs = torch.tensor([[0, 1, 2, 2], [0, 1, 0, 0], [2, 0, 1, 1]])
    X = torch.nn.functional.one_hot(seqs, 3).to(DT).reshape(3, 12)
    d_h = (seqs[:, None, :] != seqs[None, :, :]).sum(-1).to(DT)
    assert_close(k(X).to_dense(), ((1 + 0.5) / (0.5 + d_h)) ** 2.0)
    with pytest.raises(torchgp.errors.ShapeError, match="T·3 columns"):
        k(torch.zeros(2, 7)).to_dense()


def test_distributional_kernels_agree():
    X = torch.cat([_randn(5, 2), 0.3 * _randn(5, 2, seed=1)], -1)
    sym = K.GaussianSymmetrizedKLKernel().to(DT)
    generic = K.DistributionalInputKernel(torchgp.kernels.distributional.symmetrized_kl).to(DT)
    generic.load_state_dict(sym.state_dict())
    assert_close(sym(X).to_dense(), generic(X).to_dense())
    assert_close(sym(X, diag=True), generic(X, diag=True))
    # the divergence by torch.distributions: KL(p||q) + KL(q||p), each a sum over independent dimensions
    p = torch.distributions.Normal(X[0, :2], (X[0, 2:].exp() + 1e-8).sqrt())
    q = torch.distributions.Normal(X[1, :2], (X[1, 2:].exp() + 1e-8).sqrt())
    kl = (torch.distributions.kl_divergence(p, q) + torch.distributions.kl_divergence(q, p)).sum()
    assert_close(sym(X).to_dense()[0, 1], torch.exp(-kl / sym.lengthscale[0, 0]))
    with pytest.raises(torchgp.errors.ShapeError, match="2k columns"):
        sym(_randn(3, 3)).to_dense()


def test_newton_girard_equals_the_sum_over_subsets():
    from itertools import combinations

    base = K.RBFKernel().to(DT)
    k = K.NewtonGirardAdditiveKernel(base, num_dims=4, max_degree=3).to(DT)
    k.outputscale = torch.tensor([0.5, 1.5, 0.7], dtype=DT)
    X, Z = _randn(5, 4), _randn(3, 4, seed=1)
    per_dim = [base(X[:, [i]], Z[:, [i]]).to_dense() for i in range(4)]
    # Duvenaud et al. (2011) eq. 5: order r is the sum over all r-subsets of dimensions of their product
    expected = sum(
        s * sum(math.prod(per_dim[i] for i in sub) for sub in combinations(range(4), r))
        for r, s in zip((1, 2, 3), (0.5, 1.5, 0.7))
    )
    assert_close(k(X, Z).to_dense(), expected)
    assert K.NewtonGirardAdditiveKernel(base, num_dims=2, max_degree=5).max_degree == 2


def test_spectral_delta_is_the_mean_cosine_of_its_frequencies():
    k = K.SpectralDeltaKernel(num_dims=2, num_deltas=4).to(DT)
    X, Z = _randn(5, 2), _randn(3, 2, seed=1)
    tau = (X[:, None, :] - Z[None, :, :]) / k.lengthscale  # (n, m, d)
    expected = torch.cos(2 * math.pi * tau @ k.Z.mT).mean(-1)
    assert_close(k(X, Z).to_dense(), expected)
    k.initialize_from_data_simple(torch.linspace(0, 1, 11, dtype=DT).unsqueeze(-1).expand(11, 2), None)
    assert torch.all(k.Z <= 0.5 / 0.1 + 1e-9) and torch.all(k.Z > 0)


def test_spectral_delta_initialises_at_the_datas_frequency():
    n = 64
    t = torch.arange(n, dtype=DT)
    y = torch.sin(2 * math.pi * 0.125 * t)  # 0.125 cycles per observation: all the power in one bin
    k = K.SpectralDeltaKernel(num_dims=1, num_deltas=50).to(DT)
    torch.manual_seed(0)
    k.initialize_from_data(t.unsqueeze(-1), y)
    # the trapezoid CDF spreads the bin's mass over its two neighbouring intervals
    assert torch.all((k.Z > 0.125 - 1 / n) & (k.Z < 0.125 + 1 / n))
