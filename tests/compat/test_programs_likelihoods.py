"""GPyTorch-style programs with non-Gaussian and structured likelihoods, run by GPyTorch 1.15 and by torchgp."""

from __future__ import annotations

import math

import torch

import torchgp
from tests._tol import assert_close
from tests.compat._harness import adam_losses, assert_same, run_both, train_exact


def _svgp(gp, z, batch_shape=torch.Size()):
    class GPModel(gp.models.ApproximateGP):
        def __init__(self, inducing_points):
            q = gp.variational.CholeskyVariationalDistribution(inducing_points.size(-2), batch_shape=batch_shape)
            vs = gp.variational.VariationalStrategy(self, inducing_points, q, learn_inducing_locations=False)
            super().__init__(vs)
            self.mean_module = gp.means.ConstantMean(batch_shape=batch_shape)
            self.covar_module = gp.kernels.ScaleKernel(
                gp.kernels.RBFKernel(batch_shape=batch_shape), batch_shape=batch_shape
            )

        def forward(self, x):
            return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return GPModel(z)


def _elbo_program(gp, share, likelihood, x, y, steps=12, batch_shape=torch.Size(), lr=0.05):
    z = torch.linspace(0, 1, 8, dtype=x.dtype).unsqueeze(-1)
    if batch_shape:
        z = z.expand(*batch_shape, 8, 1).clone()
    model = _svgp(gp, z, batch_shape).to(x.dtype)
    likelihood = likelihood.to(x.dtype)
    share(model)
    share(likelihood)
    mll = gp.mlls.VariationalELBO(likelihood, model, num_data=y.size(-1))
    model.train()
    likelihood.train()
    losses = adam_losses([*model.parameters(), *likelihood.parameters()], lambda: -mll(model(x), y).sum(), steps, lr=lr)
    model.eval()
    likelihood.eval()
    x_test = torch.linspace(0, 1, 7, dtype=x.dtype).unsqueeze(-1)
    with torch.no_grad():
        f = model(x_test)
        y_test = y[..., :7]
        elp = likelihood.expected_log_prob(y_test, f)
    out = {"loss": losses, "mean": f.mean, "var": f.variance, "elp": elp}
    for name, value in likelihood.named_parameters():
        out[name] = value.detach()
    return out


def _data(n=50):
    x = torch.rand(n, 1, dtype=torch.float64)
    return x, torch.sin(6 * x[:, 0])


def test_student_t_robust_regression():
    def program(gp, share):
        x, f = _data()
        y = f + 0.1 * torch.randn(50, dtype=torch.float64)
        y[::10] += 3.0  # outliers
        return _elbo_program(gp, share, gp.likelihoods.StudentTLikelihood(), x, y)

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_laplace_regression():
    def program(gp, share):
        x, f = _data()
        y = f + 0.2 * torch.distributions.Laplace(0.0, 1.0).sample((50,)).double()
        model = _svgp(gp, torch.linspace(0, 1, 8, dtype=torch.float64).unsqueeze(-1)).double()
        likelihood = gp.likelihoods.LaplaceLikelihood().double()
        share(model)
        share(likelihood)
        mll = gp.mlls.VariationalELBO(likelihood, model, num_data=50)
        loss = -mll(model(x), y)
        loss.backward()
        out = {"loss": loss.detach()}
        for name, value in [*model.named_parameters(), *likelihood.named_parameters()]:
            out["grad_" + name] = value.grad
        return out

    ref, ours = run_both(program)
    # GPyTorch integrates the kink of |y - f| by 20-point Gauss-Hermite (errors ~1e-3); torchgp's E|y - f| is exact
    assert_same(ref, ours, rtol=1e-2, atol=2e-2)


def test_laplace_expected_log_prob_is_the_exact_integral():
    torch.manual_seed(0)
    mean, var = torch.randn(7, dtype=torch.float64), 0.01 + 0.5 * torch.rand(7, dtype=torch.float64)
    y = torch.randn(7, dtype=torch.float64)
    likelihood = torchgp.likelihoods.LaplaceLikelihood().double()
    likelihood.noise = 0.3
    q = torchgp.distributions.MultivariateNormal(mean, torch.diag_embed(var))
    f = torch.linspace(-12, 12, 200001, dtype=torch.float64).unsqueeze(-1) * var.sqrt() + mean  # (k, 7)
    density = torch.exp(-0.5 * (f - mean).pow(2) / var) / (2 * math.pi * var).sqrt()
    log_p = torch.distributions.Laplace(f, likelihood.noise.detach().sqrt().squeeze(-1)).log_prob(y)
    reference = torch.trapezoid(density * log_p, f, dim=0)  # E_q[log p(y | f)] on a fine grid
    assert_close(likelihood.expected_log_prob(y, q).detach(), reference, loose=1e2)


def test_beta_regression():
    def program(gp, share):
        x, f = _data()
        y = torch.sigmoid(2 * f).clamp(0.02, 0.98)
        return _elbo_program(gp, share, gp.likelihoods.BetaLikelihood(), x, y)

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_softmax_multiclass_with_mixing():
    def program(gp, share):
        x, _ = _data(60)
        labels = (x[:, 0] > 0.33).long() + (x[:, 0] > 0.66).long()
        likelihood = gp.likelihoods.SoftmaxLikelihood(num_features=4, num_classes=3)

        class MulticlassGP(gp.models.ApproximateGP):
            def __init__(self, inducing_points):
                batch = torch.Size([4])
                q = gp.variational.CholeskyVariationalDistribution(inducing_points.size(-2), batch_shape=batch)
                vs = gp.variational.IndependentMultitaskVariationalStrategy(
                    gp.variational.VariationalStrategy(self, inducing_points, q, learn_inducing_locations=False),
                    num_tasks=4,
                )
                super().__init__(vs)
                self.mean_module = gp.means.ConstantMean(batch_shape=batch)
                self.covar_module = gp.kernels.ScaleKernel(gp.kernels.RBFKernel(batch_shape=batch), batch_shape=batch)

            def forward(self, x):
                return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

        z = torch.linspace(0, 1, 6, dtype=torch.float64).unsqueeze(-1).expand(4, 6, 1).clone()
        model = MulticlassGP(z).double()
        likelihood = likelihood.double()
        share(model)
        share(likelihood)
        mll = gp.mlls.VariationalELBO(likelihood, model, num_data=60)
        model.train()
        likelihood.train()
        params = [*model.parameters(), *likelihood.parameters()]
        opt = torch.optim.Adam(params, lr=0.05)
        losses = []
        for _ in range(8):
            torch.manual_seed(1)  # the ELBO of a softmax likelihood is a Monte Carlo estimate: same draws
            opt.zero_grad()
            loss = -mll(model(x), labels)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        model.eval()
        with torch.no_grad():
            f = model(torch.rand(5, 1, dtype=torch.float64))
        return {"loss": torch.stack(losses), "mean": f.mean, "var": f.variance, "mixing": likelihood.mixing_weights}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def _exact(gp, x, y, likelihood, num_tasks=None):
    class ExactGPModel(gp.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, likelihood)
            if num_tasks is None:
                self.mean_module = gp.means.ConstantMean()
                self.covar_module = gp.kernels.ScaleKernel(gp.kernels.RBFKernel())
            else:
                self.mean_module = gp.means.MultitaskMean(gp.means.ConstantMean(), num_tasks=num_tasks)
                self.covar_module = gp.kernels.MultitaskKernel(gp.kernels.RBFKernel(), num_tasks=num_tasks, rank=1)

        def forward(self, x):
            mean, covar = self.mean_module(x), self.covar_module(x)
            if num_tasks is None:
                return gp.distributions.MultivariateNormal(mean, covar)
            return gp.distributions.MultitaskMultivariateNormal(mean, covar)

    return ExactGPModel()


def _exact_program(gp, share, model, x, y, x_test, steps=10, **pred_kwargs):
    losses = train_exact(gp, share, model, x, y, steps)
    with torch.no_grad():
        f = model(x_test)
        pred = model.likelihood(f, **pred_kwargs)
    return {"loss": losses, "f_mean": f.mean, "f_var": f.variance, "mean": pred.mean, "var": pred.variance}


def _multitask_data(n=25):
    x = torch.rand(n, 1, dtype=torch.float64)
    y = torch.stack([torch.sin(6 * x[:, 0]), torch.cos(6 * x[:, 0])], -1) + 0.1 * torch.randn(n, 2, dtype=torch.float64)
    return x, y


def test_multitask_likelihood_with_rank_one_noise():
    def program(gp, share):
        x, y = _multitask_data()
        x_test = torch.rand(6, 1, dtype=torch.float64)  # before the model: IndexKernel's draws differ (see below)
        likelihood = gp.likelihoods.MultitaskGaussianLikelihood(num_tasks=2, rank=1)
        model = _exact(gp, x, y, likelihood, num_tasks=2).double()
        out = _exact_program(gp, share, model, x, y, x_test)
        out["noise"] = likelihood.noise.detach()
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_multitask_likelihood_without_global_noise():
    def program(gp, share):
        x, y = _multitask_data()
        x_test = torch.rand(6, 1, dtype=torch.float64)
        likelihood = gp.likelihoods.MultitaskGaussianLikelihood(num_tasks=2, has_global_noise=False)
        model = _exact(gp, x, y, likelihood, num_tasks=2).double()
        out = _exact_program(gp, share, model, x, y, x_test)
        out["task_noises"] = likelihood.task_noises.detach()
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_fixed_noise_with_learned_additional_noise():
    def program(gp, share):
        x, f = _data(30)
        noise = 0.01 + 0.05 * torch.rand(30, dtype=torch.float64)
        y = f + noise.sqrt() * torch.randn(30, dtype=torch.float64)
        likelihood = gp.likelihoods.FixedNoiseGaussianLikelihood(noise=noise, learn_additional_noise=True)
        model = _exact(gp, x, y, likelihood).double()
        x_test = torch.rand(5, 1, dtype=torch.float64)
        test_noise = torch.full((5,), 0.02, dtype=torch.float64)
        out = _exact_program(gp, share, model, x, y, x_test, noise=test_noise)
        out["second_noise"] = likelihood.second_noise.detach()
        out["test_noise"] = test_noise
        return out

    ref, ours = run_both(program)
    # GPyTorch 1.15 passes noise=... to the learned second noise too, so it adds the test noise twice;
    # the predictive variance is var f + test noise + second noise (checked below for both libraries)
    ref_var, our_var = ref.pop("var"), ours.pop("var")
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ref_var, ref["f_var"] + 2 * ref["test_noise"])
    torch.testing.assert_close(our_var, ours["f_var"] + ours["test_noise"] + ours["second_noise"])


def test_missing_observations_likelihood():
    def program(gp, share):
        x, f = _data(30)
        y = f + 0.1 * torch.randn(30, dtype=torch.float64)
        y[[3, 11, 20]] = float("nan")
        likelihood = gp.likelihoods.GaussianLikelihoodWithMissingObs()
        z = torch.linspace(0, 1, 6, dtype=torch.float64).unsqueeze(-1)
        model = _svgp(gp, z).double()
        likelihood = likelihood.double()
        share(model)
        share(likelihood)
        mll = gp.mlls.VariationalELBO(likelihood, model, num_data=30)
        model.train()
        likelihood.train()
        losses = adam_losses([*model.parameters(), *likelihood.parameters()], lambda: -mll(model(x), y), 10, lr=0.05)
        model.eval()
        with torch.no_grad():
            f_test = model(x[:6])
            marginal = likelihood.log_marginal(y[:6], f_test)
        return {"loss": losses, "mean": f_test.mean, "log_marginal": marginal}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def _nan_policy_program(build_inside):
    def program(gp, share):
        x, f = _data(30)
        y = f + 0.1 * torch.randn(30, dtype=torch.float64)
        y[[2, 17]] = float("nan")
        with gp.settings.observation_nan_policy("mask" if build_inside else "ignore"):
            model = _exact(gp, x, y, gp.likelihoods.GaussianLikelihood()).double()
        share(model)
        model.train()
        mll = gp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        with gp.settings.observation_nan_policy("mask"):
            losses = adam_losses(model, lambda: -mll(model(x), y), 8)
            model.eval()
            x_test = torch.rand(5, 1, dtype=torch.float64)
            with torch.no_grad():
                pred = model.likelihood(model(x_test))
        with torch.no_grad():  # dense reference: the posterior given the observed points only
            seen = ~torch.isnan(y)
            k_xx = model.covar_module(x[seen]).to_dense() + model.likelihood.noise * torch.eye(28, dtype=y.dtype)
            k_sx = model.covar_module(x_test, x[seen]).to_dense()
            k_ss = model.covar_module(x_test).to_dense().diagonal()
            dense_var = k_ss - (k_sx * torch.linalg.solve(k_xx, k_sx.mT).mT).sum(-1) + model.likelihood.noise
        return {"loss": losses, "mean": pred.mean, "var": pred.variance, "dense_var": dense_var}

    return program


def test_observation_nan_policy_mask():
    ref, ours = run_both(_nan_policy_program(build_inside=True))
    # GPyTorch 1.15's predictive variance under 'mask' also conditions on the missing points; the dense
    # posterior given the observed points is the reference for it
    ref_var, our_var = ref.pop("var"), ours.pop("var")
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)
    assert_close(our_var, ours["dense_var"], loose=1e2)
    assert not torch.allclose(ref_var, ref["dense_var"], rtol=1e-3)


def test_observation_nan_policy_mask_set_after_building():
    # built outside the policy (torchgp warns that NaN targets need it), trained and predicted inside it
    ref, ours = run_both(_nan_policy_program(build_inside=False))
    ours_var = ours.pop("var")
    ref.pop("var")  # GPyTorch 1.15 conditions its variance on the missing points too (test_observation_nan_policy_mask)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)
    assert_close(ours_var, ours["dense_var"], loose=1e2)


def test_observation_nan_policy_mask_multitask():
    def program(gp, share):
        x, y = _multitask_data()
        y[3, 0] = float("nan")
        y[7, 1] = float("nan")
        x_test = torch.rand(4, 1, dtype=torch.float64)
        with gp.settings.observation_nan_policy("mask"):
            likelihood = gp.likelihoods.MultitaskGaussianLikelihood(num_tasks=2)
            model = _exact(gp, x, y, likelihood, num_tasks=2).double()
            losses = train_exact(gp, share, model, x, y, 5)
            with torch.no_grad():
                f = model(x_test)
        with torch.no_grad():  # dense reference: condition the joint prior on the observed entries only
            joint = model.forward(torch.cat([x, x_test]))
            noisy = likelihood(model.forward(x)).covariance_matrix  # (nt, nt), interleaved: row = point · t + task
            cov = joint.covariance_matrix
            seen = ~torch.isnan(y.reshape(-1))
            k_sx, k_ss = cov[50:, :50][:, seen], cov[50:, 50:]
            resid = (y.reshape(-1) - joint.mean[:25].reshape(-1))[seen]
            solve = torch.linalg.solve(noisy[seen][:, seen], torch.cat([resid.unsqueeze(-1), k_sx.mT], -1))
            dense_mean = joint.mean[25:].reshape(-1) + k_sx @ solve[:, 0]
            dense_var = (k_ss - k_sx @ solve[:, 1:]).diagonal()
        return {"loss": losses, "mean": f.mean, "var": f.variance, "dense_mean": dense_mean, "dense_var": dense_var}

    ref, ours = run_both(program)
    # GPyTorch 1.15's predictive variance under 'mask' also conditions on the missing entries (as for one task)
    ref_var, our_var = ref.pop("var"), ours.pop("var")
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)
    assert_close(ours["mean"].reshape(-1), ours["dense_mean"], loose=1e2)
    assert_close(our_var.reshape(-1), ours["dense_var"], loose=1e2)
    assert not torch.allclose(ref_var.reshape(-1), ref["dense_var"], rtol=1e-3)


def test_rank_one_multitask_noise_expected_log_prob():
    # GPyTorch 1.15's ELBO term for MultitaskGaussianLikelihood(rank=1) keeps only the diagonal of the task noise
    # covariance (its exact MLL keeps all of it); torchgp's is E_q[log N(y_i; f_i, Σ)] with the full Σ:
    # -½ [t log 2π + log|Σ| + (y_i - m_i)ᵀ Σ⁻¹ (y_i - m_i) + tr(Σ⁻¹ S_i)], S_i the tasks' covariance at point i
    def program(gp, share):
        likelihood = gp.likelihoods.MultitaskGaussianLikelihood(num_tasks=3, rank=1).double()
        with torch.no_grad():
            likelihood.task_noise_covar_factor.normal_()
        share(likelihood)
        a = torch.randn(12, 12, dtype=torch.float64)
        cov = a @ a.mT / 12
        mean, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
        q = gp.distributions.MultitaskMultivariateNormal(mean, cov)
        eps = 1e-3 * torch.eye(3, dtype=torch.float64)
        one_point = gp.distributions.MultitaskMultivariateNormal(torch.zeros(1, 3, dtype=torch.float64), eps)
        sigma = likelihood(one_point).covariance_matrix - eps  # Σ, the noise covariance over the tasks
        elp = likelihood.expected_log_prob(y, q)
        return {"elp": elp.detach(), "sigma": sigma.detach(), "mean": mean, "cov": cov, "y": y}

    ref, ours = run_both(program)
    elp_ref, elp_ours = ref.pop("elp"), ours.pop("elp")
    assert_same(ref, ours, rtol=1e-10, atol=1e-10)
    sigma, r = ours["sigma"], ours["y"] - ours["mean"]
    S = ours["cov"].reshape(4, 3, 4, 3).diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (n, t, t), interleaved rows
    inv = torch.linalg.inv(sigma)
    dense = -0.5 * (
        3 * math.log(2 * math.pi)
        + torch.linalg.slogdet(sigma)[1]
        + torch.einsum("ni,ij,nj->n", r, inv, r)
        + torch.einsum("ij,nji->n", inv, S)
    )
    assert_close(elp_ours, dense)
    d = sigma.diagonal()
    diagonal_only = (-0.5 * (r.pow(2) + S.diagonal(dim1=-2, dim2=-1)) / d - 0.5 * torch.log(2 * math.pi * d)).sum(-1)
    assert_close(elp_ref, diagonal_only)


def test_heteroskedastic_noise_from_a_gp_on_the_log_noise():
    def program(gp, share):
        x = torch.rand(30, 1, dtype=torch.float64)
        sd = 0.05 + 0.2 * x[:, 0]
        y = torch.sin(6 * x[:, 0]) + sd * torch.randn(30, dtype=torch.float64)
        x_test = torch.rand(5, 1, dtype=torch.float64)
        noise_model = _exact(gp, x, torch.log(sd**2), gp.likelihoods.GaussianLikelihood()).double()
        noise = gp.likelihoods.noise_models.HeteroskedasticNoise(noise_model)
        likelihood = gp.likelihoods._GaussianLikelihoodBase(noise_covar=noise)
        model = _exact(gp, x, y, likelihood).double()
        share(model)
        model.train()
        mll = gp.mlls.ExactMarginalLogLikelihood(likelihood, model)
        losses = adam_losses(model, lambda: -mll(model(x), y, x), 5)
        model.eval()
        with torch.no_grad():
            pred = likelihood(model(x_test), x_test)
        return {"loss": losses, "mean": pred.mean, "var": pred.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_svgp_with_fixed_noise_and_learned_additional_noise():
    def program(gp, share):
        x, f = _data(40)
        noise = 0.01 + 0.02 * torch.rand(40, dtype=torch.float64)
        y = f + noise.sqrt() * torch.randn(40, dtype=torch.float64)
        likelihood = gp.likelihoods.FixedNoiseGaussianLikelihood(noise=noise, learn_additional_noise=True)
        return _elbo_program(gp, share, likelihood, x, y, steps=8)

    ref, ours = run_both(program)
    # the evaluation-time expected_log_prob at 7 of the 40 points has no noise for them in either library
    ref.pop("elp")
    ours.pop("elp")
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)


def test_batch_of_student_t_likelihoods():
    def program(gp, share):
        x, f = _data(40)
        y = torch.stack([f, -f]) + 0.1 * torch.randn(2, 40, dtype=torch.float64)
        likelihood = gp.likelihoods.StudentTLikelihood(batch_shape=torch.Size([2]))
        return _elbo_program(gp, share, likelihood, x, y, steps=6, batch_shape=torch.Size([2]))

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-7)
