"""GPyTorch's variational and non-Gaussian tutorial programs, run by GPyTorch 1.15 and by torchgp: same numbers."""

from __future__ import annotations

import torch

from tests.compat._harness import adam_losses, assert_same, run_both, step_losses


def _svgp(gp, z, distribution="cholesky", strategy="standard", learn=True):
    class SVGP(gp.models.ApproximateGP):
        def __init__(self, inducing_points):
            m = inducing_points.size(0)
            if distribution == "cholesky":
                q = gp.variational.CholeskyVariationalDistribution(m)
            elif distribution == "natural":
                q = gp.variational.NaturalVariationalDistribution(m)
            else:
                q = gp.variational.MeanFieldVariationalDistribution(m)
            if strategy == "standard":
                vs = gp.variational.VariationalStrategy(self, inducing_points, q, learn_inducing_locations=learn)
            else:
                vs = gp.variational.UnwhitenedVariationalStrategy(
                    self, inducing_points, q, learn_inducing_locations=learn
                )
            super().__init__(vs)
            self.mean_module = gp.means.ConstantMean()
            self.covar_module = gp.kernels.ScaleKernel(gp.kernels.RBFKernel())

        def forward(self, x):
            return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return SVGP(z)


def _minibatches(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def test_svgp_regression_minibatches():
    def program(gp, share):
        x = torch.rand(200, 2, dtype=torch.float64)  # float64: K_zz's Cholesky needs no jitter
        y = torch.sin(4 * x).sum(-1) + 0.1 * torch.randn(200, dtype=torch.float64)
        model = _svgp(gp, x[:16].clone()).double()
        likelihood = gp.likelihoods.GaussianLikelihood().double()
        share(model)
        share(likelihood)
        mll = gp.mlls.VariationalELBO(likelihood, model, num_data=y.size(0))
        opt = torch.optim.Adam([*model.parameters(), *likelihood.parameters()], lr=0.05)
        losses = []
        model.train()
        likelihood.train()
        for _ in range(2):
            for xb, yb in _minibatches(x, y, 50):
                opt.zero_grad()
                loss = -mll(model(xb), yb)
                loss.backward()
                opt.step()
                losses.append(loss.detach())
        model.eval()
        likelihood.eval()
        with torch.no_grad():
            pred = likelihood(model(torch.rand(10, 2, dtype=torch.float64)))
        return {"loss": torch.stack(losses), "mean": pred.mean, "var": pred.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=2e-4, atol=2e-5)


def test_meanfield_predictive_log_likelihood():
    def program(gp, share):
        x = torch.rand(60, 1, dtype=torch.float64)
        y = torch.sin(6 * x[:, 0]) + 0.1 * torch.randn(60, dtype=torch.float64)
        z = torch.linspace(0, 1, 6, dtype=torch.float64).unsqueeze(-1)
        model = _svgp(gp, z, "meanfield", learn=False).double()
        likelihood = gp.likelihoods.GaussianLikelihood().double()
        share(model)
        share(likelihood)
        mll = gp.mlls.PredictiveLogLikelihood(likelihood, model, num_data=60)
        model.train()
        likelihood.train()
        losses = adam_losses([*model.parameters(), *likelihood.parameters()], lambda: -mll(model(x), y), 10, lr=0.05)
        model.eval()
        with torch.no_grad():
            f = model(torch.rand(7, 1, dtype=torch.float64))
        return {"loss": losses, "mean": f.mean, "var": f.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=2e-4, atol=2e-5)


def test_bernoulli_classification():
    def program(gp, share):
        x = torch.rand(80, 1)
        y = (torch.sin(8 * x[:, 0]) > 0).float()
        model = _svgp(gp, torch.linspace(0, 1, 10).unsqueeze(-1), learn=False)
        likelihood = gp.likelihoods.BernoulliLikelihood()
        share(model)
        mll = gp.mlls.VariationalELBO(likelihood, model, num_data=80)
        model.train()
        losses = adam_losses(model, lambda: -mll(model(x), y), 15)
        model.eval()
        with torch.no_grad():
            probs = likelihood(model(torch.linspace(0, 1, 9).unsqueeze(-1))).mean
        return {"loss": losses, "probs": probs}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=2e-4, atol=2e-5)


def test_natural_gradient_descent():
    def program(gp, share):
        x = torch.rand(100, 1)
        y = torch.cos(5 * x[:, 0]) + 0.1 * torch.randn(100)
        model = _svgp(gp, torch.linspace(0, 1, 12).unsqueeze(-1), "natural", learn=False)
        likelihood = gp.likelihoods.GaussianLikelihood()
        share(model)
        share(likelihood)
        mll = gp.mlls.VariationalELBO(likelihood, model, num_data=100)
        ngd = gp.optim.NGD(model.variational_parameters(), num_data=100, lr=0.1)
        hyper = torch.optim.Adam([*model.hyperparameters(), *likelihood.parameters()], lr=0.01)
        model.train()
        likelihood.train()
        losses = step_losses([ngd, hyper], lambda: -mll(model(x), y), 8)
        model.eval()
        with torch.no_grad():
            f = model(torch.rand(6, 1))
        return {"loss": losses, "mean": f.mean, "var": f.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=2e-4, atol=2e-5)


def test_dirichlet_classification():
    def program(gp, share):
        x = torch.rand(40, 2)
        labels = (x[:, 0] > 0.5).long() + (x[:, 1] > 0.5).long()
        likelihood = gp.likelihoods.DirichletClassificationLikelihood(labels, learn_additional_noise=True)

        class DirichletGPModel(gp.models.ExactGP):
            def __init__(self, train_x, train_y, likelihood, num_classes):
                super().__init__(train_x, train_y, likelihood)
                batch = torch.Size((num_classes,))
                self.mean_module = gp.means.ConstantMean(batch_shape=batch)
                self.covar_module = gp.kernels.ScaleKernel(gp.kernels.RBFKernel(batch_shape=batch), batch_shape=batch)

            def forward(self, x):
                return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

        model = DirichletGPModel(x, likelihood.transformed_targets, likelihood, likelihood.num_classes)
        share(model)
        mll = gp.mlls.ExactMarginalLogLikelihood(likelihood, model)
        model.train()
        losses = adam_losses(model, lambda: -mll(model(x), likelihood.transformed_targets).sum(), 10)
        model.eval()
        with torch.no_grad():
            f = model(torch.rand(8, 2))
        return {"loss": losses, "mean": f.mean, "var": f.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=2e-4, atol=2e-5)
