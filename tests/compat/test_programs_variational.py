"""GPyTorch-style programs with further variational strategies and distributions, run by GPyTorch 1.15 and torchgp."""

from __future__ import annotations

import pytest
import torch

from tests.compat._harness import assert_same, run_both, step_losses

DT = torch.float64  # float64 throughout: K_zz's Cholesky needs no jitter, whose escalation rules may differ


def _kernel(gp, batch_shape=torch.Size(), dims=None):
    return gp.kernels.ScaleKernel(
        gp.kernels.RBFKernel(batch_shape=batch_shape, ard_num_dims=dims), batch_shape=batch_shape
    )


def _train(gp, modules, loss_fn, steps=10, lr=0.05, reseed=False):
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    for m in modules:
        m.train()
    losses = []
    for step in range(steps):
        if reseed:
            torch.manual_seed(100 + step)  # a Monte Carlo objective: both libraries see the same draws
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    for m in modules:
        m.eval()
    return torch.stack(losses)


def _data(n=60, d=1):
    x = torch.rand(n, d, dtype=DT)
    return x, torch.sin(6 * x).sum(-1) + 0.1 * torch.randn(n, dtype=DT)


def _single_output(gp, make_strategy):
    class GPModel(gp.models.ApproximateGP):
        def __init__(self):
            super().__init__(make_strategy(self))
            self.mean_module = gp.means.ConstantMean()
            self.covar_module = _kernel(gp)

        def forward(self, x):
            return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return GPModel().to(DT)


def _elbo_run(gp, share, model, x, y, steps=10, x_test=None):
    likelihood = gp.likelihoods.GaussianLikelihood().to(DT)
    share(model)
    share(likelihood)
    mll = gp.mlls.VariationalELBO(likelihood, model, num_data=y.size(0))
    losses = _train(gp, [model, likelihood], lambda: -mll(model(x), y), steps)
    with torch.no_grad():
        f = model(torch.rand(7, x.size(-1), dtype=DT) if x_test is None else x_test)
        pred = likelihood(f)
    return {"loss": losses, "mean": f.mean, "var": f.variance, "pred_var": pred.variance}


def test_delta_variational_distribution():
    def program(gp, share):
        x, y = _data()
        z = torch.linspace(0, 1, 8, dtype=DT).unsqueeze(-1)
        model = _single_output(
            gp,
            lambda m: gp.variational.VariationalStrategy(
                m, z, gp.variational.DeltaVariationalDistribution(8), learn_inducing_locations=True
            ),
        )
        return _elbo_run(gp, share, model, x, y)

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_orthogonally_decoupled_strategy():
    def program(gp, share):
        x, y = _data()
        z_covar = torch.linspace(0, 1, 6, dtype=DT).unsqueeze(-1)
        z_mean = torch.rand(12, 1, dtype=DT)

        def strategy(m):
            covar_vs = gp.variational.VariationalStrategy(
                m, z_covar, gp.variational.CholeskyVariationalDistribution(6), learn_inducing_locations=True
            )
            return gp.variational.OrthogonallyDecoupledVariationalStrategy(
                covar_vs, z_mean, gp.variational.DeltaVariationalDistribution(12)
            )

        return _elbo_run(gp, share, _single_output(gp, strategy), x, y)

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_tril_natural_distribution_with_ngd():
    def program(gp, share):
        x, y = _data(80)
        z = torch.linspace(0, 1, 10, dtype=DT).unsqueeze(-1)
        model = _single_output(
            gp,
            lambda m: gp.variational.VariationalStrategy(
                m, z, gp.variational.TrilNaturalVariationalDistribution(10), learn_inducing_locations=False
            ),
        )
        likelihood = gp.likelihoods.GaussianLikelihood().to(DT)
        share(model)
        share(likelihood)
        mll = gp.mlls.VariationalELBO(likelihood, model, num_data=80)
        ngd = gp.optim.NGD(model.variational_parameters(), num_data=80, lr=0.1)
        hyper = torch.optim.Adam([*model.hyperparameters(), *likelihood.parameters()], lr=0.01)
        model.train()
        likelihood.train()
        losses = step_losses([ngd, hyper], lambda: -mll(model(x), y), 8)
        model.eval()
        with torch.no_grad():
            f = model(torch.rand(6, 1, dtype=DT))
        return {"loss": losses, "mean": f.mean, "var": f.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def _multitask_svgp(gp, num_tasks, num_latents=None):
    batch = torch.Size([num_tasks])

    class IndependentMultitaskGPModel(gp.models.ApproximateGP):
        def __init__(self):
            z = torch.linspace(0, 1, 7, dtype=DT).unsqueeze(-1).expand(num_tasks, 7, 1).clone()
            q = gp.variational.CholeskyVariationalDistribution(7, batch_shape=batch)
            vs = gp.variational.IndependentMultitaskVariationalStrategy(
                gp.variational.VariationalStrategy(self, z, q, learn_inducing_locations=True), num_tasks=num_tasks
            )
            super().__init__(vs)
            self.mean_module = gp.means.ConstantMean(batch_shape=batch)
            self.covar_module = _kernel(gp, batch)

        def forward(self, x):
            return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return IndependentMultitaskGPModel().to(DT)


def test_independent_multitask_strategy():
    def program(gp, share):
        x = torch.rand(40, 1, dtype=DT)
        y = torch.stack([torch.sin(6 * x[:, 0]), torch.cos(6 * x[:, 0]), x[:, 0]], -1)
        y = y + 0.1 * torch.randn(40, 3, dtype=DT)
        x_test = torch.rand(6, 1, dtype=DT)
        model = _multitask_svgp(gp, 3)
        likelihood = gp.likelihoods.MultitaskGaussianLikelihood(num_tasks=3).to(DT)
        share(model)
        share(likelihood)
        mll = gp.mlls.VariationalELBO(likelihood, model, num_data=40)
        losses = _train(gp, [model, likelihood], lambda: -mll(model(x), y))
        with torch.no_grad():
            f = model(x_test)
            pred = likelihood(f)
            lower, upper = pred.confidence_region()
        return {"loss": losses, "mean": pred.mean, "var": pred.variance, "f_var": f.variance, "lower": lower}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_independent_multitask_strategy_with_task_indices():
    def program(gp, share):
        x = torch.rand(40, 1, dtype=DT)
        task = torch.randint(0, 2, (40,))
        y = torch.where(task == 0, torch.sin(6 * x[:, 0]), torch.cos(6 * x[:, 0])) + 0.1 * torch.randn(40, dtype=DT)
        x_test, task_test = torch.rand(6, 1, dtype=DT), torch.tensor([0, 1, 1, 0, 1, 0])
        model = _multitask_svgp(gp, 2)
        likelihood = gp.likelihoods.GaussianLikelihood().to(DT)
        share(model)
        share(likelihood)
        mll = gp.mlls.VariationalELBO(likelihood, model, num_data=40)
        losses = _train(gp, [model, likelihood], lambda: -mll(model(x, task_indices=task), y))
        with torch.no_grad():
            f = model(x_test, task_indices=task_test)
        return {"loss": losses, "mean": f.mean, "var": f.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_nearest_neighbour_variational_strategy():
    def program(gp, share):
        x, y = _data(50, 2)
        x_test = torch.rand(6, 2, dtype=DT)

        class VNNGP(gp.models.ApproximateGP):
            def __init__(self, inducing_points):
                q = gp.variational.MeanFieldVariationalDistribution(inducing_points.size(-2))
                vs = gp.variational.NNVariationalStrategy(self, inducing_points, q, k=5, training_batch_size=20)
                super().__init__(vs)
                self.mean_module = gp.means.ZeroMean()
                self.covar_module = _kernel(gp, dims=2)

            def forward(self, x):
                return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

            def __call__(self, x, prior=False, **kwargs):
                return self.variational_strategy(x=x, prior=False, **kwargs)

        model = VNNGP(x.clone()).to(DT)
        likelihood = gp.likelihoods.GaussianLikelihood().to(DT)
        share(model)
        share(likelihood)
        mll = gp.mlls.VariationalELBO(likelihood, model, num_data=50)
        batches = []

        def loss_fn():
            f = model(x=None)  # a random minibatch of the inducing points
            idx = model.variational_strategy.current_training_indices
            batches.append(idx.clone())
            return -mll(f, y[idx])

        losses = _train(gp, [model, likelihood], loss_fn, steps=8, reseed=True)
        with torch.no_grad():
            f = model(x_test)
        return {"loss": losses, "mean": f.mean, "var": f.variance, "batches": torch.cat(batches)}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def _gplvm(gp, y, latent="variational"):
    n, data_dim = y.shape
    latent_dim, m = 2, 6
    batch = torch.Size([data_dim])

    class BayesianGPLVMModel(gp.models.gplvm.BayesianGPLVM):
        def __init__(self):
            z = torch.randn(data_dim, m, latent_dim, dtype=DT)
            q_u = gp.variational.CholeskyVariationalDistribution(m, batch_shape=batch)
            q_f = gp.variational.VariationalStrategy(self, z, q_u, learn_inducing_locations=True)
            x_init = torch.nn.Parameter(torch.randn(n, latent_dim, dtype=DT))
            prior_x = gp.priors.NormalPrior(torch.zeros(n, latent_dim, dtype=DT), torch.ones(n, latent_dim, dtype=DT))
            if latent == "variational":
                x = gp.models.gplvm.VariationalLatentVariable(n, data_dim, latent_dim, x_init, prior_x)
            elif latent == "map":
                x = gp.models.gplvm.MAPLatentVariable(n, latent_dim, x_init, prior_x)
            else:
                x = gp.models.gplvm.PointLatentVariable(n, latent_dim, x_init)
            super().__init__(x, q_f)
            self.mean_module = gp.means.ZeroMean()
            self.covar_module = gp.kernels.ScaleKernel(gp.kernels.RBFKernel(ard_num_dims=latent_dim))

        def forward(self, x):
            return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

        def sample_latent_variable(self):
            return self.X()

    return BayesianGPLVMModel().to(DT)


def _gplvm_program(latent):
    def program(gp, share):
        t = torch.linspace(0, 1, 20, dtype=DT)
        y = torch.stack([torch.sin(4 * t), torch.cos(4 * t), t, t**2], -1) + 0.05 * torch.randn(20, 4, dtype=DT)
        model = _gplvm(gp, y, latent)
        likelihood = gp.likelihoods.GaussianLikelihood(batch_shape=torch.Size([4])).to(DT)
        share(model)
        share(likelihood)
        mll = gp.mlls.VariationalELBO(likelihood, model, num_data=20)

        def loss_fn():
            return -mll(model(model.sample_latent_variable()), y.T).sum()

        losses = _train(gp, [model, likelihood], loss_fn, steps=8, reseed=True)
        out = {"loss": losses}
        for name, value in model.X.named_parameters():
            out["X." + name] = value.detach()
        with torch.no_grad():
            f = model(torch.randn(5, 2, dtype=DT))
        out.update(mean=f.mean, var=f.variance)
        return out

    return program


def test_bayesian_gplvm_variational_latents():
    ref, ours = run_both(_gplvm_program("variational"))
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_bayesian_gplvm_map_latents():
    ref, ours = run_both(_gplvm_program("map"))
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_bayesian_gplvm_point_latents():
    ref, ours = run_both(_gplvm_program("point"))
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_deep_sigma_point_process():
    def program(gp, share):
        dspp = gp.models.deep_gps.dspp
        num_quad = 3

        class DSPPHiddenLayer(dspp.DSPPLayer):
            def __init__(self, input_dims, output_dims, m=6):
                batch = torch.Size([output_dims]) if output_dims is not None else torch.Size()
                z = torch.randn(*batch, m, input_dims, dtype=DT)
                q = gp.variational.MeanFieldVariationalDistribution(m, batch_shape=batch)
                vs = gp.variational.VariationalStrategy(self, z, q, learn_inducing_locations=True)
                super().__init__(vs, input_dims, output_dims, num_quad)
                self.mean_module = gp.means.LinearMean(input_dims, batch_shape=batch)
                self.covar_module = _kernel(gp, batch, dims=input_dims)

            def forward(self, x):
                return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

        class TwoLayerDSPP(dspp.DSPP):
            def __init__(self):
                super().__init__(num_quad)
                self.hidden_layer = DSPPHiddenLayer(1, 2)
                self.last_layer = DSPPHiddenLayer(2, None)
                self.likelihood = gp.likelihoods.GaussianLikelihood()

            def forward(self, x, **kwargs):
                return self.last_layer(self.hidden_layer(x, **kwargs), **kwargs)

        x, y = _data(40)
        model = TwoLayerDSPP().to(DT)
        share(model)
        mll = gp.mlls.DeepPredictiveLogLikelihood(model.likelihood, model, num_data=40, beta=0.05)
        losses = _train(gp, [model], lambda: -mll(model(x), y), steps=8)
        with torch.no_grad():
            out = model.likelihood(model(torch.rand(5, 1, dtype=DT)))
            mean, var = out.mean, out.variance  # (Q, 5) mixture components
            log_w = model.quad_weights.unsqueeze(-1)
            mixture_mean = (log_w.exp() * mean).sum(0)
        return {"loss": losses, "mean": mean, "var": var, "mixture_mean": mixture_mean}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dims", [1, 2])
def test_grid_interpolation_strategy(dims):
    def program(gp, share):
        x, y = _data(60, dims)

        def strategy(m):
            q = gp.variational.CholeskyVariationalDistribution(8**dims)
            return gp.variational.GridInterpolationVariationalStrategy(m, 8, [(0.0, 1.0)] * dims, q)

        return _elbo_run(gp, share, _single_output(gp, strategy), x, y, steps=6)

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_large_batch_strategy():
    def program(gp, share):
        x, y = _data()
        z = torch.linspace(0, 1, 8, dtype=DT).unsqueeze(-1)
        q = gp.variational.CholeskyVariationalDistribution(8)
        model = _single_output(
            gp, lambda m: gp.variational.LargeBatchVariationalStrategy(m, z, q, learn_inducing_locations=True)
        )
        return _elbo_run(gp, share, model, x, y, steps=6)

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)
