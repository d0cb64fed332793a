"""GPyTorch's exact-GP tutorial programs, run by GPyTorch 1.15 and by torchgp in its place: same numbers."""

from __future__ import annotations

import math

import torch

from tests.compat._harness import adam_losses, assert_same, run_both, train_exact


def _regression_data(n=40, d=1):
    x = torch.rand(n, d)
    y = torch.sin(6 * x).sum(-1) + 0.1 * torch.randn(n)
    return x, y


def _exact_model(gp, x, y, covar):
    class ExactGPModel(gp.models.ExactGP):
        def __init__(self, train_x, train_y, likelihood):
            super().__init__(train_x, train_y, likelihood)
            self.mean_module = gp.means.ConstantMean()
            self.covar_module = covar

        def forward(self, x):
            return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return ExactGPModel(x, y, gp.likelihoods.GaussianLikelihood())


def _train_and_predict(gp, share, model, x, y, x_test, steps=15, fast=False):
    losses = train_exact(gp, share, model, x, y, steps)
    with torch.no_grad(), gp.settings.fast_pred_var(fast):
        pred = model.likelihood(model(x_test))
        lower, upper = pred.confidence_region()
    return {"loss": losses, "mean": pred.mean, "var": pred.variance, "lower": lower, "upper": upper}


def test_simple_regression():
    def program(gp, share):
        x, y = _regression_data()
        model = _exact_model(gp, x, y, gp.kernels.ScaleKernel(gp.kernels.RBFKernel()))
        return _train_and_predict(gp, share, model, x, y, torch.linspace(0, 1, 25).unsqueeze(-1))

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-4, atol=1e-5)


def test_ard_matern_with_priors_and_constraints():
    def program(gp, share):
        x, y = _regression_data(50, 3)
        base = gp.kernels.MaternKernel(
            nu=1.5,
            ard_num_dims=3,
            lengthscale_prior=gp.priors.GammaPrior(3.0, 6.0),
            lengthscale_constraint=gp.constraints.Interval(0.01, 5.0),
        )
        covar = gp.kernels.ScaleKernel(base, outputscale_prior=gp.priors.GammaPrior(2.0, 0.15))
        model = _exact_model(gp, x, y, covar)
        model.likelihood.noise_covar.register_prior("noise_prior", gp.priors.GammaPrior(1.1, 0.05), "noise")
        out = _train_and_predict(gp, share, model, x, y, torch.rand(10, 3))
        out["lengthscale"] = model.covar_module.base_kernel.lengthscale.detach()
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-4, atol=1e-5)


def test_love_fast_predictive_variances():
    def program(gp, share):
        x, y = _regression_data(60)
        model = _exact_model(gp, x, y, gp.kernels.ScaleKernel(gp.kernels.RBFKernel()))
        return _train_and_predict(gp, share, model, x, y, torch.rand(30, 1), steps=10, fast=True)

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-4, atol=1e-5)


def test_spectral_mixture_initialised_from_data():
    def program(gp, share):
        x = torch.linspace(0, 1, 30).unsqueeze(-1)
        y = torch.sin(x.squeeze(-1) * (2 * math.pi)) + 0.1 * torch.randn(30)
        covar = gp.kernels.SpectralMixtureKernel(num_mixtures=3)
        covar.initialize_from_data(x, y)  # random: GPyTorch's draw is shared below
        model = _exact_model(gp, x, y, covar)
        return _train_and_predict(gp, share, model, x, y, torch.linspace(0, 1.5, 20).unsqueeze(-1), steps=10)

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-4, atol=1e-5)


def test_batch_independent_outputs():
    def program(gp, share):
        x = torch.rand(30, 1)
        y = torch.stack([torch.sin(6 * x[:, 0]), torch.cos(6 * x[:, 0])], -1) + 0.1 * torch.randn(30, 2)

        class BatchIndependentMultitaskGPModel(gp.models.ExactGP):
            def __init__(self, train_x, train_y, likelihood):
                super().__init__(train_x, train_y, likelihood)
                self.mean_module = gp.means.ConstantMean(batch_shape=torch.Size([2]))
                self.covar_module = gp.kernels.ScaleKernel(
                    gp.kernels.RBFKernel(batch_shape=torch.Size([2])), batch_shape=torch.Size([2])
                )

            def forward(self, x):
                mvn = gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))
                return gp.distributions.MultitaskMultivariateNormal.from_batch_mvn(mvn)

        likelihood = gp.likelihoods.MultitaskGaussianLikelihood(num_tasks=2)
        model = BatchIndependentMultitaskGPModel(x, y, likelihood)
        return _train_and_predict(gp, share, model, x, y, torch.rand(12, 1), steps=10)

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-4, atol=1e-5)


def test_fantasy_model_predictions():
    def program(gp, share):
        x, y = _regression_data(30)
        model = _exact_model(gp, x, y, gp.kernels.ScaleKernel(gp.kernels.RBFKernel()))
        out = _train_and_predict(gp, share, model, x, y, torch.rand(5, 1), steps=5)
        x_new, y_new = torch.rand(3, 1), torch.randn(3)
        x_test = torch.rand(8, 1)
        with torch.no_grad():
            model(x_test)  # the caches the fantasy update starts from
            fantasy = model.get_fantasy_model(x_new, y_new)
            pred = fantasy(x_test)
        out.update(fantasy_mean=pred.mean, fantasy_var=pred.variance)
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-4, atol=1e-5)


def test_independent_model_list():
    def program(gp, share):
        x1, y1 = _regression_data(20)
        x2, y2 = _regression_data(25)
        m1 = _exact_model(gp, x1, y1, gp.kernels.ScaleKernel(gp.kernels.RBFKernel()))
        m2 = _exact_model(gp, x2, y2, gp.kernels.ScaleKernel(gp.kernels.MaternKernel(nu=0.5)))
        model = gp.models.IndependentModelList(m1, m2)
        likelihood = gp.likelihoods.LikelihoodList(m1.likelihood, m2.likelihood)
        share(model)
        mll = gp.mlls.SumMarginalLogLikelihood(likelihood, model)
        model.train()
        losses = adam_losses(model, lambda: -mll(model(*model.train_inputs), model.train_targets), 10)
        model.eval()
        x_test = torch.rand(6, 1)
        with torch.no_grad():
            preds = likelihood(*model(x_test, x_test))
        return {"loss": losses, "mean1": preds[0].mean, "mean2": preds[1].mean, "var2": preds[1].variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-4, atol=1e-5)


def test_sgpr_inducing_point_kernel():
    def program(gp, share):
        x, y = (t.double() for t in _regression_data(80))  # float64: no jitter, whose rules differ
        base = gp.kernels.ScaleKernel(gp.kernels.RBFKernel())
        covar = gp.kernels.InducingPointKernel(base, inducing_points=x[:10].clone(), likelihood=None)
        model = _exact_model(gp, x, y, covar).double()
        covar.likelihood = model.likelihood
        return _train_and_predict(gp, share, model, x, y, torch.rand(10, 1, dtype=torch.float64), steps=10)

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-4, atol=1e-5)
