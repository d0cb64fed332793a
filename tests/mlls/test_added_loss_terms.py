"""Added loss terms: registration, and how each objective adds them (GPyTorch's conventions)."""

from __future__ import annotations

import math

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.models._models import ExactModel, data, make_model


class _Constant(torchgp.mlls.AddedLossTerm):
    def __init__(self, value):
        self.value = value

    def loss(self, *params):
        return self.value


class _ModelWithTerm(ExactModel):
    def __init__(self, X, y, likelihood, value):
        super().__init__(X, y, likelihood)
        self.value = value
        self.register_added_loss_term("const_term")

    def forward(self, x):
        self.update_added_loss_term("const_term", _Constant(torch.as_tensor(self.value, dtype=x.dtype)))
        return super().forward(x)


def test_register_update_and_iterate():
    model, _, _ = make_model(n=5)
    model.covar_module.register_added_loss_term("a")
    assert list(model.added_loss_terms()) == []  # an empty slot adds nothing
    term = _Constant(torch.tensor(1.0))
    model.covar_module.update_added_loss_term("a", term)
    assert list(model.named_added_loss_terms()) == [("covar_module.a", term)]
    with pytest.raises(torchgp.errors.InputError, match="register_added_loss_term"):
        model.update_added_loss_term("missing", term)
    with pytest.raises(torchgp.errors.ModelTypeError, match="AddedLossTerm"):
        model.covar_module.update_added_loss_term("a", 3.0)


def test_exact_mll_adds_term_over_n():
    X, y = data(n=9)
    model = _ModelWithTerm(X, y, torchgp.likelihoods.GaussianLikelihood(), 2.5).double()
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    with_term = mll(model(X), y)
    model.value = 0.0
    without = mll(model(X), y)
    assert_close(with_term - without, torch.tensor(2.5 / 9, dtype=torch.float64))

    class GTerm(gpytorch.mlls.AddedLossTerm):
        def loss(self, *params):
            return torch.tensor(2.5, dtype=torch.float64)

    class G(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(X, y, gpytorch.likelihoods.GaussianLikelihood())
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())
            self.register_added_loss_term("const_term")

        def forward(self, x):
            self.update_added_loss_term("const_term", GTerm())
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    g = G().double()
    g.initialize(**{name: p.detach().clone() for name, p in model.named_parameters()})
    model.value = 2.5
    assert_close(mll(model(X), y), gpytorch.mlls.ExactMarginalLogLikelihood(g.likelihood, g)(g(X), y))


class _SVGP(torchgp.models.ApproximateGP):
    def __init__(self, Z):
        q = torchgp.variational.CholeskyVariationalDistribution(Z.shape[0])
        super().__init__(torchgp.variational.VariationalStrategy(self, Z, q, learn_inducing_locations=False))
        self.mean_module = torchgp.means.ZeroMean()
        self.covar_module = torchgp.kernels.RBFKernel()
        self.register_added_loss_term("const_term")

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


@pytest.mark.parametrize(
    "cls", [torchgp.mlls.VariationalELBO, torchgp.mlls.PredictiveLogLikelihood, torchgp.mlls.GammaRobustVariationalELBO]
)
def test_approximate_mlls_subtract_the_term(cls):
    X, y = data(n=8)
    model = _SVGP(X[:4].clone()).double()
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    mll = cls(lik, model, num_data=8)
    without = mll(model(X), y)
    model.update_added_loss_term("const_term", _Constant(torch.tensor(0.75, dtype=torch.float64)))
    with_term = mll(model(X), y)
    assert_close(without - with_term, torch.tensor(0.75, dtype=torch.float64))
    parts = cls(lik, model, num_data=8, combine_terms=False)(model(X), y)
    assert len(parts) == 4 and float(parts[3]) == 0.75


def _gpytorch_sgpr_trace(X, Z, ell, noise):
    k = gpytorch.kernels.RBFKernel().double()
    k.lengthscale = torch.tensor(ell, dtype=torch.float64)
    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    lik.noise = torch.tensor(noise, dtype=torch.float64)
    Kxx = k(X).to_dense()
    Kxz, Kzz = k(X, Z).to_dense(), k(Z).to_dense()
    Q = Kxz @ torch.linalg.solve(Kzz, Kxz.mT) + 1e-6 * torch.eye(len(X), dtype=X.dtype)  # PD for GPyTorch's MVN
    term = gpytorch.mlls.InducingPointKernelAddedLossTerm(
        gpytorch.distributions.MultivariateNormal(torch.zeros(len(X), dtype=X.dtype), Kxx),
        gpytorch.distributions.MultivariateNormal(torch.zeros(len(X), dtype=X.dtype), Q),
        lik,
    )
    return term.loss(), Kxx, Q


def test_inducing_point_term_equals_titsias_trace_and_gpytorch():
    X, _ = data(n=10)
    Z = X[:3].clone()
    ref, Kxx, Q = _gpytorch_sgpr_trace(X, Z, 0.6, 0.1)
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    lik.noise = 0.1
    zero = torch.zeros(len(X), dtype=X.dtype)
    term = torchgp.mlls.InducingPointKernelAddedLossTerm(
        torchgp.distributions.MultivariateNormal(zero, Kxx), torchgp.distributions.MultivariateNormal(zero, Q), lik
    )
    assert_close(term.loss(), -0.5 * torch.trace(Kxx - Q) / 0.1)
    assert_close(term.loss(), ref)


def test_kl_gaussian_term_matches_gpytorch():
    g = torch.Generator().manual_seed(3)
    n, q, D = 6, 2, 4
    mu, s = torch.randn(n, q, generator=g, dtype=torch.float64), torch.rand(n, q, generator=g, dtype=torch.float64)
    q_x = torch.distributions.Normal(mu, s + 0.1)
    p_x = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ours = torchgp.mlls.KLGaussianAddedLossTerm(q_x, p_x, n, D).loss()
    ref = gpytorch.mlls.KLGaussianAddedLossTerm(q_x, p_x, n, D).loss()
    closed = (torch.log(1 / (s + 0.1)) + ((s + 0.1) ** 2 + mu**2) / 2 - 0.5).sum() / n / D
    assert_close(ours, closed)
    assert_close(ours, ref)


def test_noise_model_term_is_the_noise_models_mll():
    noise_model, X, z = make_model(n=7)
    term = torchgp.mlls.NoiseModelAddedLossTerm(noise_model)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(noise_model.likelihood, noise_model)
    assert_close(term.loss(X), mll(noise_model(X), z))
    assert_close(term.loss(), mll(noise_model(X), z))
    assert math.isfinite(float(term.loss()))


def test_kl_gaussian_term_accepts_a_torchgp_prior():
    """``KLGaussianAddedLossTerm(q, NormalPrior(...))`` equals the KL to the prior's torch distribution."""
    from torchgp.mlls import KLGaussianAddedLossTerm

    q = torch.distributions.Normal(torch.zeros(2, 5), torch.full((2, 5), 0.5))
    p = torchgp.priors.NormalPrior(torch.zeros(2, 5), torch.ones(2, 5))
    # closed form per entry: log(1/0.5) + 0.5²/2 − 1/2
    expected = 10 * (torch.log(torch.tensor(2.0)) + 0.125 - 0.5) / 5 / 3
    torch.testing.assert_close(KLGaussianAddedLossTerm(q, p, 5, 3).loss(), expected)
