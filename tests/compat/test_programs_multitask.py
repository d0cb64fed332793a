"""GPyTorch's multitask and structured-kernel tutorial programs, run by GPyTorch 1.15 and by torchgp: same numbers."""

from __future__ import annotations

import torch

from tests.compat._harness import adam_losses, assert_same, run_both, train_exact


def _two_task_data(n=30):
    x = torch.linspace(0, 1, n)
    y = torch.stack([torch.sin(6 * x), torch.cos(6 * x)], -1) + 0.1 * torch.randn(n, 2)
    return x, y


def test_multitask_icm_regression():
    def program(gp, share):
        x, y = _two_task_data()

        class MultitaskGPModel(gp.models.ExactGP):
            def __init__(self, train_x, train_y, likelihood):
                super().__init__(train_x, train_y, likelihood)
                self.mean_module = gp.means.MultitaskMean(gp.means.ConstantMean(), num_tasks=2)
                self.covar_module = gp.kernels.MultitaskKernel(gp.kernels.RBFKernel(), num_tasks=2, rank=1)

            def forward(self, x):
                return gp.distributions.MultitaskMultivariateNormal(self.mean_module(x), self.covar_module(x))

        likelihood = gp.likelihoods.MultitaskGaussianLikelihood(num_tasks=2)
        model = MultitaskGPModel(x, y, likelihood)  # the task factor starts random: shared below
        losses = train_exact(gp, share, model, x, y, 10)
        with torch.no_grad():
            pred = likelihood(model(torch.linspace(0, 1, 11)))
        return {"loss": losses, "mean": pred.mean, "var": pred.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=2e-4, atol=2e-5)


def test_hadamard_multitask_index_kernel():
    def program(gp, share):
        x1, x2 = torch.rand(20), torch.rand(15)
        y1 = torch.sin(6 * x1) + 0.1 * torch.randn(20)
        y2 = torch.sin(6 * x2 + 0.5) + 0.1 * torch.randn(15)
        i1, i2 = torch.zeros(20, 1, dtype=torch.long), torch.ones(15, 1, dtype=torch.long)
        x, i, y = torch.cat([x1, x2]), torch.cat([i1, i2]), torch.cat([y1, y2])

        class HadamardGP(gp.models.ExactGP):
            def __init__(self, train_x, train_y, likelihood):
                super().__init__(train_x, train_y, likelihood)
                self.mean_module = gp.means.ConstantMean()
                self.covar_module = gp.kernels.RBFKernel()
                self.task_covar_module = gp.kernels.IndexKernel(num_tasks=2, rank=1)

            def forward(self, x, i):
                covar = self.covar_module(x).mul(self.task_covar_module(i))
                return gp.distributions.MultivariateNormal(self.mean_module(x), covar)

        likelihood = gp.likelihoods.GaussianLikelihood()
        model = HadamardGP((x, i), y, likelihood)
        share(model)
        mll = gp.mlls.ExactMarginalLogLikelihood(likelihood, model)
        model.train()
        losses = adam_losses(model, lambda: -mll(model(x, i), y), 10)
        model.eval()
        xt = torch.linspace(0, 1, 7)
        with torch.no_grad():
            p1 = likelihood(model(xt, torch.zeros(7, 1, dtype=torch.long)))
            p2 = likelihood(model(xt, torch.ones(7, 1, dtype=torch.long)))
        return {"loss": losses, "mean1": p1.mean, "var2": p2.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=2e-4, atol=2e-5)


def test_lmc_variational_multitask():
    def program(gp, share):
        x = torch.rand(60, 1, dtype=torch.float64)
        y = torch.cat([torch.sin(6 * x), torch.cos(6 * x), torch.sin(3 * x)], -1)
        y = y + 0.1 * torch.randn(60, 3, dtype=torch.float64)

        class LMC(gp.models.ApproximateGP):
            def __init__(self):
                z = torch.rand(2, 8, 1, dtype=torch.float64)
                q = gp.variational.CholeskyVariationalDistribution(8, batch_shape=torch.Size([2]))
                base = gp.variational.VariationalStrategy(self, z, q, learn_inducing_locations=True)
                vs = gp.variational.LMCVariationalStrategy(base, num_tasks=3, num_latents=2, latent_dim=-1)
                super().__init__(vs)
                self.mean_module = gp.means.ConstantMean(batch_shape=torch.Size([2]))
                self.covar_module = gp.kernels.ScaleKernel(
                    gp.kernels.RBFKernel(batch_shape=torch.Size([2])), batch_shape=torch.Size([2])
                )

            def forward(self, x):
                return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

        model = LMC().double()
        likelihood = gp.likelihoods.MultitaskGaussianLikelihood(num_tasks=3).double()
        share(model)
        share(likelihood)
        mll = gp.mlls.VariationalELBO(likelihood, model, num_data=60)
        model.train()
        likelihood.train()
        losses = adam_losses([*model.parameters(), *likelihood.parameters()], lambda: -mll(model(x), y), 8, lr=0.05)
        model.eval()
        with torch.no_grad():
            pred = likelihood(model(torch.linspace(0, 1, 6, dtype=torch.float64).unsqueeze(-1)))
        return {"loss": losses, "mean": pred.mean, "var": pred.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=2e-4, atol=2e-5)


def test_kiss_gp_one_dimension():
    def program(gp, share):
        x = torch.linspace(0, 1, 200, dtype=torch.float64)
        y = torch.sin(8 * x) + 0.1 * torch.randn(200, dtype=torch.float64)

        class KissGP(gp.models.ExactGP):
            def __init__(self, train_x, train_y, likelihood):
                super().__init__(train_x, train_y, likelihood)
                self.mean_module = gp.means.ConstantMean()
                grid = gp.utils.grid.choose_grid_size(train_x, 1.0)
                self.covar_module = gp.kernels.ScaleKernel(
                    gp.kernels.GridInterpolationKernel(gp.kernels.RBFKernel(), grid_size=grid, num_dims=1)
                )

            def forward(self, x):
                return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

        likelihood = gp.likelihoods.GaussianLikelihood()
        model = KissGP(x, y, likelihood).double()
        share(model)
        model.train()
        with gp.settings.max_cholesky_size(1000):  # the same (Cholesky) solver in both libraries
            mll = gp.mlls.ExactMarginalLogLikelihood(likelihood, model)
            losses = adam_losses(model, lambda: -mll(model(x), y), 8)
            model.eval()
            with torch.no_grad():
                pred = likelihood(model(torch.linspace(0.05, 0.95, 9, dtype=torch.float64)))
        return {"loss": losses, "mean": pred.mean, "var": pred.variance}

    ref, ours = run_both(program)
    # the losses agree to 1e-6; GPyTorch's interpolated predictive cache agrees to about 1e-5
    assert_same(ref, ours, rtol=1e-6, atol=1e-7, loose={"mean": (1e-4, 2e-6), "var": (1e-4, 2e-6)})
