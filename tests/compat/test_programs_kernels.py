"""GPyTorch-style programs with further kernels, priors, derivative GPs, feature extractors and metrics."""

from __future__ import annotations

import math

import pytest
import torch

import torchgp
from tests.compat._harness import adam_losses, assert_same, run_both, train_exact


def _exact_program(gp, share, covar, x, y, x_test, steps=8, mean=None):
    class ExactGPModel(gp.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, gp.likelihoods.GaussianLikelihood())
            self.mean_module = gp.means.ConstantMean() if mean is None else mean
            self.covar_module = covar

        def forward(self, x):
            return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    model = ExactGPModel().double()
    losses = train_exact(gp, share, model, x, y, steps)
    with torch.no_grad():
        pred = model.likelihood(model(x_test))
    out = {"loss": losses, "mean": pred.mean, "var": pred.variance}
    for name, value in model.named_hyperparameters():
        out[name] = value.detach()
    return out, model


def _data(n=30, d=1):
    x = torch.rand(n, d, dtype=torch.float64)
    y = torch.sin(6 * x).sum(-1) + 0.1 * torch.randn(n, dtype=torch.float64)
    return x, y, torch.rand(7, d, dtype=torch.float64)


KERNELS = {
    "periodic": lambda gp: gp.kernels.ScaleKernel(gp.kernels.PeriodicKernel()),
    "periodic_ard": lambda gp: gp.kernels.PeriodicKernel(ard_num_dims=2),
    "polynomial": lambda gp: gp.kernels.PolynomialKernel(power=2),
    "linear": lambda gp: gp.kernels.LinearKernel(),
    "linear_plus_rbf": lambda gp: gp.kernels.LinearKernel() + gp.kernels.ScaleKernel(gp.kernels.RBFKernel()),
    "piecewise_polynomial_q1": lambda gp: gp.kernels.ScaleKernel(gp.kernels.PiecewisePolynomialKernel(q=1)),
    "piecewise_polynomial_q3": lambda gp: gp.kernels.ScaleKernel(gp.kernels.PiecewisePolynomialKernel(q=3)),
    "rq": lambda gp: gp.kernels.ScaleKernel(gp.kernels.RQKernel(ard_num_dims=2)),
    "rbf_times_periodic": lambda gp: gp.kernels.ScaleKernel(gp.kernels.RBFKernel() * gp.kernels.PeriodicKernel()),
    "additive_structure": lambda gp: gp.kernels.ScaleKernel(
        gp.kernels.AdditiveStructureKernel(gp.kernels.RBFKernel(), num_dims=2)
    ),
    "matern_active_dims": lambda gp: gp.kernels.MaternKernel(nu=2.5, active_dims=[1]),
    "sum_over_active_dims": lambda gp: (
        gp.kernels.RBFKernel(active_dims=[0]) + gp.kernels.PeriodicKernel(active_dims=[1])
    ),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_exact_gp_with_kernel(name):
    def program(gp, share):
        x, y, x_test = _data(30, 2)
        return _exact_program(gp, share, KERNELS[name](gp), x, y, x_test)[0]

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_cosine_kernel_in_one_dimension():
    def program(gp, share):  # cos(π|x - x'|/p) is positive definite on the line only
        x, y, x_test = _data(30, 1)
        return _exact_program(gp, share, gp.kernels.ScaleKernel(gp.kernels.CosineKernel()), x, y, x_test)[0]

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_scale_kernel_over_active_dims():
    # GPyTorch's ScaleKernel saves its base kernel's active_dims as its own buffer: the checkpoint loads strictly
    def program(gp, share):
        x, y, x_test = _data(30, 2)
        covar = gp.kernels.ScaleKernel(gp.kernels.MaternKernel(nu=2.5, active_dims=[1]))
        return _exact_program(gp, share, covar, x, y, x_test)[0]

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_piecewise_polynomial_q2_closed_form():
    # GPyTorch 1.15 writes (j + 4j + 3)/3 for the r² coefficient at q = 2; Rasmussen & Williams eq. 4.21 (and
    # GPyTorch's own docstring) has (j² + 4j + 3)/3, which torchgp follows: the reference is the closed form
    torch.manual_seed(0)
    x1, x2 = torch.rand(5, 2, dtype=torch.float64), torch.rand(4, 2, dtype=torch.float64)
    k = torchgp.kernels.PiecewisePolynomialKernel(q=2).double()
    k.lengthscale = 0.8
    r = (x1.unsqueeze(-2) - x2.unsqueeze(-3)).div(0.8).norm(dim=-1)
    j = 2 // 2 + 2 + 1
    expected = (1 - r).clamp_min(0).pow(j + 2) * (1 + (j + 2) * r + (j**2 + 4 * j + 3) / 3 * r**2)
    torch.testing.assert_close(k(x1, x2).to_dense().detach(), expected)


def test_priors_on_every_hyperparameter():
    def program(gp, share):
        x, y, x_test = _data(25, 2)
        base = gp.kernels.RBFKernel(
            ard_num_dims=2,
            lengthscale_prior=gp.priors.LogNormalPrior(0.0, 1.0),
        )
        covar = gp.kernels.ScaleKernel(base, outputscale_prior=gp.priors.SmoothedBoxPrior(0.1, 4.0, sigma=0.1))
        mean = gp.means.ConstantMean(constant_prior=gp.priors.NormalPrior(0.0, 2.0))
        out, model = _exact_program(gp, share, covar, x, y, x_test, mean=mean)
        model.likelihood.register_prior("noise_prior", gp.priors.HalfCauchyPrior(0.1), "noise")
        model.train()
        mll = gp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        out["mll_with_noise_prior"] = mll(model(x), y).detach()
        out["prior_terms"] = torch.stack(
            [prior.log_prob(closure(module)).sum() for _, module, prior, closure, _ in model.named_priors()]
        ).detach()
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_prior_densities():
    def program(gp, share):
        x = torch.rand(6, dtype=torch.float64) * 3 + 0.05
        priors = [
            gp.priors.GammaPrior(2.0, 0.5),
            gp.priors.NormalPrior(1.0, 0.5),
            gp.priors.LogNormalPrior(0.2, 0.7),
            gp.priors.HalfCauchyPrior(0.3),
            gp.priors.HalfNormalPrior(0.8),
            gp.priors.UniformPrior(0.0, 4.0),
            gp.priors.SmoothedBoxPrior(0.5, 2.0, sigma=0.2),
        ]
        out = {f"prior{i}": p.log_prob(x) for i, p in enumerate(priors)}
        mvn = gp.priors.MultivariateNormalPrior(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
        out["mvn"] = mvn.log_prob(x.view(3, 2))
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-6)  # the priors' parameters are float32 (Python numbers)


def test_derivative_gp_rbf_kernel_grad():
    def program(gp, share):
        x = torch.rand(12, 1, dtype=torch.float64)
        y = torch.stack([torch.sin(4 * x[:, 0]), 4 * torch.cos(4 * x[:, 0])], -1) + 0.05 * torch.randn(
            12, 2, dtype=torch.float64
        )
        x_test = torch.linspace(0, 1, 6, dtype=torch.float64).unsqueeze(-1)

        class GPModelWithDerivatives(gp.models.ExactGP):
            def __init__(self):
                super().__init__(x, y, gp.likelihoods.MultitaskGaussianLikelihood(num_tasks=2))
                self.mean_module = gp.means.ConstantMeanGrad()
                self.covar_module = gp.kernels.ScaleKernel(gp.kernels.RBFKernelGrad())

            def forward(self, x):
                return gp.distributions.MultitaskMultivariateNormal(self.mean_module(x), self.covar_module(x))

        model = GPModelWithDerivatives().double()
        losses = train_exact(gp, share, model, x, y, 8)
        with torch.no_grad():
            pred = model.likelihood(model(x_test))
        return {"loss": losses, "mean": pred.mean, "var": pred.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_deep_kernel_learning_with_scale_to_bounds():
    def program(gp, share):
        x = torch.rand(40, 3, dtype=torch.float64)
        y = torch.sin(3 * x.sum(-1)) + 0.1 * torch.randn(40, dtype=torch.float64)
        x_test = torch.rand(8, 3, dtype=torch.float64)
        features = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).double()

        class DKLModel(gp.models.ExactGP):
            def __init__(self):
                super().__init__(x, y, gp.likelihoods.GaussianLikelihood())
                self.feature_extractor = features
                self.scale_to_bounds = gp.utils.grid.ScaleToBounds(-1.0, 1.0)
                self.mean_module = gp.means.ConstantMean()
                self.covar_module = gp.kernels.ScaleKernel(gp.kernels.RBFKernel(ard_num_dims=2))

            def forward(self, x):
                z = self.scale_to_bounds(self.feature_extractor(x))
                return gp.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))

        model = DKLModel().double()
        losses = train_exact(gp, share, model, x, y, 8, lr=0.01)
        with torch.no_grad():
            pred = model.likelihood(model(x_test))
        return {"loss": losses, "mean": pred.mean, "var": pred.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_cholesky_jitter_setting_in_svgp():
    def program(gp, share):
        x = torch.rand(40, 1, dtype=torch.float64)
        y = torch.sin(6 * x[:, 0]) + 0.1 * torch.randn(40, dtype=torch.float64)
        z = torch.linspace(0, 1, 10, dtype=torch.float64).unsqueeze(-1)

        class SVGP(gp.models.ApproximateGP):
            def __init__(self):
                q = gp.variational.CholeskyVariationalDistribution(10)
                super().__init__(gp.variational.VariationalStrategy(self, z, q, learn_inducing_locations=True))
                self.mean_module = gp.means.ZeroMean()
                self.covar_module = gp.kernels.ScaleKernel(gp.kernels.RBFKernel())

            def forward(self, x):
                return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

        model, likelihood = SVGP().double(), gp.likelihoods.GaussianLikelihood().double()
        share(model)
        share(likelihood)
        mll = gp.mlls.VariationalELBO(likelihood, model, num_data=40)
        with gp.settings.cholesky_jitter(double_value=1e-3):
            model.train()
            losses = adam_losses(torch.nn.ModuleList([model, likelihood]), lambda: -mll(model(x), y), 8)
            model.eval()
            with torch.no_grad():
                f = model(torch.rand(6, 1, dtype=torch.float64))
        return {"loss": losses, "mean": f.mean, "var": f.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_metrics_on_a_trained_model():
    def program(gp, share):
        x, y, _ = _data(30, 1)
        x_test = torch.rand(12, 1, dtype=torch.float64)
        y_test = torch.sin(6 * x_test[:, 0]) + 0.1 * torch.randn(12, dtype=torch.float64)
        covar = gp.kernels.ScaleKernel(gp.kernels.RBFKernel())
        out, model = _exact_program(gp, share, covar, x, y, x_test, steps=5)
        with torch.no_grad():
            pred = model.likelihood(model(x_test))
            m = gp.metrics
            out.update(
                mae=m.mean_absolute_error(pred, y_test),
                mse=m.mean_squared_error(pred, y_test),
                rmse=m.mean_squared_error(pred, y_test, squared=False),
                smse=m.standardized_mean_squared_error(pred, y_test),
                nlpd=m.negative_log_predictive_density(pred, y_test),
                msll=m.mean_standardized_log_loss(pred, y_test),
                msll_train=m.mean_standardized_log_loss(pred, y_test, train_y=y),
                qce=m.quantile_coverage_error(pred, y_test, quantile=80.0),
            )
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_periodic_kernel_closed_form():
    torch.manual_seed(0)
    x1, x2 = torch.rand(4, 2, dtype=torch.float64), torch.rand(3, 2, dtype=torch.float64)
    k = torchgp.kernels.PeriodicKernel().double()
    k.lengthscale, k.period_length = 0.7, 0.4
    # GPyTorch's documented form: k(x, x') = exp(-2 Σ_d sin²(π (x_d - x'_d) / p) / ℓ), ℓ not squared
    s = torch.sin(math.pi * (x1.unsqueeze(-2) - x2.unsqueeze(-3)) / 0.4).pow(2).sum(-1)
    torch.testing.assert_close(k(x1, x2).to_dense().detach(), torch.exp(-2 * s / 0.7))


def test_index_kernel_initial_draws():
    def program(gp, share):
        kernel = gp.kernels.IndexKernel(num_tasks=3, rank=2)
        return {"covar_factor": kernel.covar_factor.detach(), "var": kernel.var.detach(), "next": torch.rand(4)}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_sample_hyperparameters_from_their_priors():
    def program(gp, share):
        x, y, _ = _data(20, 1)

        class ExactGPModel(gp.models.ExactGP):
            def __init__(self):
                noise_prior = gp.priors.GammaPrior(2.0, 20.0)
                super().__init__(x, y, gp.likelihoods.GaussianLikelihood(noise_prior=noise_prior))
                self.mean_module = gp.means.ConstantMean(constant_prior=gp.priors.NormalPrior(0.0, 1.0))
                base = gp.kernels.RBFKernel(lengthscale_prior=gp.priors.GammaPrior(3.0, 6.0))
                self.covar_module = gp.kernels.ScaleKernel(base, outputscale_prior=gp.priors.GammaPrior(2.0, 0.5))

            def forward(self, x):
                return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

        model = ExactGPModel().double()
        share(model)
        sampled = model.pyro_sample_from_prior()
        out = {name: value.detach() for name, value in sampled.named_hyperparameters()}
        sampled.train()
        mll = gp.mlls.ExactMarginalLogLikelihood(sampled.likelihood, sampled)
        out["mll"] = mll(sampled(x), y).detach()
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)
