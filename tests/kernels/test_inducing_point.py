"""InducingPointKernel: GPyTorch's SGPR tutorial model (an ExactGP with the Nyström kernel) trains and
predicts, with GPyTorch's loss, gradients and predictions (float64)."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close

DT = torch.float64


def _data(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.linspace(0, 1, n, dtype=DT).unsqueeze(-1)
    y = torch.sin(6 * X[:, 0]) + 0.1 * torch.randn(n, generator=g, dtype=DT)
    return X, y


def _model(lib, X, y, Z):
    class SGPRModel(lib.models.ExactGP):
        def __init__(self, X, y, likelihood):
            super().__init__(X, y, likelihood)
            self.mean_module = lib.means.ConstantMean()
            self.base_covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel())
            self.covar_module = lib.kernels.InducingPointKernel(
                self.base_covar_module, inducing_points=Z.clone(), likelihood=likelihood
            )

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return SGPRModel(X, y, lib.likelihoods.GaussianLikelihood()).to(DT)


def _pair(Z_step=10):
    X, y = _data()
    Z = X[::Z_step]
    g, t = _model(gpytorch, X, y, Z), _model(torchgp, X, y, Z)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in g.named_parameters():
            p.add_(0.2 * torch.rand(p.shape, generator=gen, dtype=DT) - 0.1)
    t.load_state_dict(g.state_dict())  # strict: the same keys and shapes
    return g, t, X, y


def _loss_and_grads(model, lib, X, y):
    model.train()
    mll = lib.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    loss = -mll(model(X), y)
    params = [p for _, p in sorted(model.named_parameters())]
    return loss.detach(), torch.autograd.grad(loss, params)


def test_loss_and_gradients_match_gpytorch():
    g, t, X, y = _pair()
    lg, gg = _loss_and_grads(g, gpytorch, X, y)
    lt, gt = _loss_and_grads(t, torchgp, X, y)
    assert_close(lt, lg)
    for a, b in zip(gt, gg):
        assert_close(a, b)


def test_predictions_match_gpytorch():
    g, t, X, y = _pair(Z_step=12)  # three inducing points: the diagonal correction matters
    Xs = torch.linspace(-0.5, 1.5, 6, dtype=DT).unsqueeze(-1)
    g.eval(), t.eval()
    with torch.no_grad():
        pg, pt = g.likelihood(g(Xs)), t.likelihood(t(Xs))
    assert_close(pt.mean, pg.mean)
    assert_close(pt.covariance_matrix, pg.covariance_matrix)


def test_predictions_without_the_correction_are_the_nystrom_gp():
    # settings.sgpr_diagonal_correction(False): the exact GP whose kernel is Q (DTC). GPyTorch's mean is that
    # GP's; its covariance there swaps in the base kernel for the test block, which torchgp does not.
    g, t, X, y = _pair(Z_step=12)
    Xs = torch.linspace(-0.5, 1.5, 6, dtype=DT).unsqueeze(-1)
    g.eval(), t.eval()
    with torch.no_grad(), gpytorch.settings.sgpr_diagonal_correction(False):
        pg = g(Xs)
    with torch.no_grad(), torchgp.settings.sgpr_diagonal_correction(False):
        pt = t(Xs)
        pt_cov = pt.covariance_matrix  # the setting applies where the lazy kernel is evaluated
        k, base = t.covar_module, t.base_covar_module
        Z, noise = k.inducing_points, t.likelihood.noise
        Kzz = base(Z).to_dense()

        def Q(a, b):
            return base(a, Z).to_dense() @ torch.linalg.solve(Kzz, base(Z, b).to_dense())

        A = Q(X, X) + noise * torch.eye(X.shape[0], dtype=DT)
        mean = t.mean_module(Xs) + Q(Xs, X) @ torch.linalg.solve(A, y - t.mean_module(X))
        cov = Q(Xs, Xs) - Q(Xs, X) @ torch.linalg.solve(A, Q(X, Xs))
    assert_close(pt.mean, pg.mean)
    assert_close(pt.mean, mean)
    assert_close(pt_cov, cov)


def test_train_mode_is_low_rank_and_records_the_trace_term():
    _, t, X, _ = _pair()
    t.train()
    k = t.covar_module
    K = k(X)
    assert isinstance(K, torchgp.linalg.operators.LowRankRootOperator) and K.R.shape == (30, 3)
    # Titsias (2009) eq. 9, by hand: -tr(K_xx - Q_xx) / (2σ²) with Q = K_xz K_zz⁻¹ K_zx
    base = t.base_covar_module
    Kxz = base(X, k.inducing_points).to_dense()
    Q = Kxz @ torch.linalg.solve(base(k.inducing_points).to_dense(), Kxz.mT)
    assert_close(K.to_dense(), Q)
    expected = -0.5 * (base(X, diag=True) - Q.diagonal()).sum() / t.likelihood.noise
    (name, term), *rest = list(t.named_added_loss_terms())
    assert not rest and name == "covar_module.inducing_point_loss_term"
    assert_close(term.loss(), expected.reshape(term.loss().shape))


def test_train_mode_refuses_other_inputs():
    _, t, X, _ = _pair()
    t.train()
    with pytest.raises(torchgp.errors.InputError, match="train mode"):
        t.covar_module(X, X[:5])
    t.covar_module.eval()
    assert t.covar_module(X, X[:5]).to_dense().shape == (30, 5)


def test_tutorial_trains_and_predicts():
    X, y = _data(n=40)
    model = _model(torchgp, X, y, X[::8])
    model.train()
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = -mll(model(X), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3
    assert model.covar_module.inducing_points.grad is not None
    model.eval()
    with torch.no_grad():
        pred = model.likelihood(model(X))
    assert torch.sqrt(torch.mean((pred.mean - y) ** 2)) < 0.3
    assert torch.all(pred.variance > 0)
