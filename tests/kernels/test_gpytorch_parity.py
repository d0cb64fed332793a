"""The newer kernels against GPyTorch 1.15 on the same inputs and hyperparameters (float64).

Each pair is built in both libraries; GPyTorch's ``state_dict`` (randomised) is loaded into
torchgp's kernel, so the ``raw_…`` names and shapes must match; then the matrix, its diagonal and
the gradients of a random linear functional of it (w.r.t. every raw hyperparameter and the inputs)
must agree to the float64 tolerance.
"""

from __future__ import annotations

import warnings

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close

G, T = gpytorch.kernels, torchgp.kernels
DT = torch.float64


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _ball(n, d, seed=0):
    x = _randn(n, d, seed=seed)
    return 0.9 * x / x.norm(dim=-1, keepdim=True) * torch.rand(n, 1, generator=torch.Generator().manual_seed(seed + 7))


def _one_hot(n, length, vocab, seed=0):
    idx = torch.randint(vocab, (n, length), generator=torch.Generator().manual_seed(seed))
    idx[1] = idx[0]  # a repeated sequence: Hamming distance 0 off the diagonal
    return torch.nn.functional.one_hot(idx, vocab).to(DT).reshape(n, length * vocab)


def _gaussians(n, k, seed=0):
    return torch.cat([_randn(n, k, seed=seed), 0.5 * _randn(n, k, seed=seed + 1)], dim=-1)


# name: (gpytorch builder, torchgp builder, input generator (n, seed) -> (n, d))
PAIRS = {
    "arc": (
        lambda: G.ArcKernel(G.MaternKernel(nu=2.5), ard_num_dims=3),
        lambda: T.ArcKernel(T.MaternKernel(nu=2.5), ard_num_dims=3),
        lambda n, s: _randn(n, 3, seed=s),
    ),
    "arc_shared": (
        lambda: G.ArcKernel(G.RBFKernel()),
        lambda: T.ArcKernel(T.RBFKernel()),
        lambda n, s: _randn(n, 2, seed=s),
    ),
    "constant": (lambda: G.ConstantKernel(), lambda: T.ConstantKernel(), lambda n, s: _randn(n, 2, seed=s)),
    "cylindrical": (
        lambda: G.CylindricalKernel(4, G.MaternKernel(nu=2.5)),
        lambda: T.CylindricalKernel(4, T.MaternKernel(nu=2.5)),
        lambda n, s: _ball(n, 3, seed=s),
    ),
    "gaussian_sym_kl": (
        lambda: G.GaussianSymmetrizedKLKernel(),
        lambda: T.GaussianSymmetrizedKLKernel(),
        lambda n, s: _gaussians(n, 2, seed=s),
    ),
    "distributional": (
        lambda: G.DistributionalInputKernel(gpytorch.kernels.gaussian_symmetrized_kl_kernel._symmetrized_kl),
        lambda: T.DistributionalInputKernel(torchgp.kernels.distributional.symmetrized_kl),
        lambda n, s: _gaussians(n, 2, seed=s),
    ),
    "hamming": (
        lambda: G.HammingIMQKernel(vocab_size=4),
        lambda: T.HammingIMQKernel(vocab_size=4),
        lambda n, s: _one_hot(n, 5, 4, seed=s),
    ),
    "newton_girard": (
        lambda: G.NewtonGirardAdditiveKernel(G.RBFKernel(), num_dims=3, max_degree=2),
        lambda: T.NewtonGirardAdditiveKernel(T.RBFKernel(), num_dims=3, max_degree=2),
        lambda n, s: _randn(n, 3, seed=s),
    ),
    **{
        f"piecewise_q{q}": (
            lambda q=q: G.PiecewisePolynomialKernel(q=q, ard_num_dims=2),
            lambda q=q: T.PiecewisePolynomialKernel(q=q, ard_num_dims=2),
            lambda n, s: 0.6 * _randn(n, 2, seed=s),
        )
        for q in (0, 1, 3)
    },
    "spectral_delta": (
        lambda: G.SpectralDeltaKernel(num_dims=2, num_deltas=6),
        lambda: T.SpectralDeltaKernel(num_dims=2, num_deltas=6),
        lambda n, s: _randn(n, 2, seed=s),
    ),
    "rff": (
        lambda: G.RFFKernel(num_samples=7, num_dims=2),
        lambda: T.RFFKernel(num_samples=7, num_dims=2),
        lambda n, s: _randn(n, 2, seed=s),
    ),
    "rff_ard": (
        lambda: G.RFFKernel(num_samples=7, num_dims=3, ard_num_dims=3),
        lambda: T.RFFKernel(num_samples=7, num_dims=3, ard_num_dims=3),
        lambda n, s: _randn(n, 3, seed=s),
    ),
}


def _build(name):
    g_build, t_build, inputs = PAIRS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # GPyTorch deprecates NewtonGirardAdditiveKernel
        gk = g_build().to(DT)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in gk.parameters():
            p.add_(0.6 * torch.rand(p.shape, generator=g, dtype=DT) - 0.3)
    tk = t_build().to(DT)
    missing, unexpected = tk.load_state_dict(gk.state_dict(), strict=False)
    assert not unexpected and not [m for m in missing if not m.endswith("active_dims")], (missing, unexpected)
    return gk, tk, inputs


def _dense(out):
    return out.to_dense() if hasattr(out, "to_dense") else out


def _grads(k, x1, x2, W, diag):
    # float64 default dtype: GPyTorch's Newton-Girard recursion allocates its buffer with torch.empty
    default = torch.get_default_dtype()
    torch.set_default_dtype(DT)
    try:
        return _grads64(k, x1, x2, W, diag)
    finally:
        torch.set_default_dtype(default)


def _grads64(k, x1, x2, W, diag):
    x1 = x1.clone().requires_grad_(True)
    x2 = x1 if x2 is None else x2.clone().requires_grad_(True)
    out = _dense(k(x1, x2, diag=diag))
    loss = (out * W).sum()
    params = [p for _, p in sorted(k.named_parameters()) if p.requires_grad]
    wrt = [*params, x1] + ([] if x2 is x1 else [x2])
    grads = torch.autograd.grad(loss, wrt, allow_unused=True) if loss.requires_grad else [None] * len(wrt)
    return out.detach(), [torch.zeros_like(w) if gr is None else gr for gr, w in zip(grads, wrt)]


# GPyTorch forms ‖x - x‖ by the Gram expansion, off from 0 by ~1e-8·‖x‖: where k'(0) ≠ 0 its
# k(X, X) diagonal is then 1e-8 off. torchgp's is exactly k(0); these compare off the diagonal and
# check the diagonal against k(0) = 1.
EXACT_AT_ZERO = {"piecewise_q0", "piecewise_q1", "piecewise_q3"}
# GPyTorch's Hamming k(X, X, diag=True) is the constant ((1 + α)/α)^β, with no gradient w.r.t. the inputs
# (though its full matrix has one on the diagonal); torchgp's diagonal is the full matrix's.
NO_DIAG_INPUT_GRAD = {"hamming"}


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("same", [True, False])
def test_matches_gpytorch(name, same):
    gk, tk, inputs = _build(name)
    X = inputs(6, 0)
    Z = None if same else inputs(6, 1)
    W = _randn(6, 6, seed=9)
    off = same and name in EXACT_AT_ZERO
    if off:
        W = W - torch.diag_embed(W.diagonal())
    Kg, grads_g = _grads(gk, X, Z, W, diag=False)
    Kt, grads_t = _grads(tk, X, Z, W, diag=False)
    if off:
        assert_close(Kt.diagonal(), torch.ones(6, dtype=DT))
        Kg, Kt = Kg - torch.diag_embed(Kg.diagonal()), Kt - torch.diag_embed(Kt.diagonal())
    assert_close(Kt, Kg)
    for a, b in zip(grads_t, grads_g):
        assert_close(a, b)
    if off:
        return  # the diagonal is k(0) = 1, checked above
    dg, dgrads_g = _grads(gk, X, Z, W[0], diag=True)
    dt, dgrads_t = _grads(tk, X, Z, W[0], diag=True)
    assert_close(dt, dg)
    assert_close(dt, Kt.diagonal())
    n_params = len(dgrads_t) - (1 if same else 2)
    for i, (a, b) in enumerate(zip(dgrads_t, dgrads_g)):
        if i >= n_params and same and name in NO_DIAG_INPUT_GRAD:
            continue
        assert_close(a, b)
