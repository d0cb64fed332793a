"""Exact multitask GPs: the Kronecker path equals the dense nt × nt computation and GPyTorch 1.15.2."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.multitask._models import D, batch_independent_model, copy_parameters, icm_model, toy_data
from torchgp.errors import InputError, ShapeError
from torchgp.linalg.kronecker_solve import kronecker_sum

NOISES = {
    "global": dict(lik_rank=0, has_task_noise=False),
    "per_task": dict(lik_rank=0),
    "per_task_only": dict(lik_rank=0, has_global_noise=False),
    "rank_1": dict(lik_rank=1),
    "rank_2": dict(lik_rank=2),
}


def _mll_and_grads(lib, model, X, Y):
    model.train()
    mll = lib.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    with gpytorch.settings.max_cholesky_size(10**6):
        value = mll(model(X), Y)
        value.backward()
    return value.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


def _predict(lib, model, Xs):
    model.eval()
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(10**6), gpytorch.settings.fast_pred_var(False):
        latent = model(Xs)
        noisy = model.likelihood(latent)
        return latent.mean, latent.variance, latent.covariance_matrix, noisy.mean, noisy.variance


@pytest.mark.parametrize("noise", list(NOISES))
def test_icm_matches_gpytorch(noise):
    X, Y = toy_data()
    kw = NOISES[noise]
    ours, theirs = icm_model(torchgp, X, Y, rank=2, **kw), icm_model(gpytorch, X, Y, rank=2, **kw)
    copy_parameters(ours, theirs)
    a, ga = _mll_and_grads(torchgp, ours, X, Y)
    b, gb = _mll_and_grads(gpytorch, theirs, X, Y)
    assert_close(a, b)
    assert ga.keys() == gb.keys()
    for k in ga:
        assert_close(ga[k], gb[k])
    Xs = torch.linspace(-0.2, 1.2, 9, dtype=D).unsqueeze(-1)
    for x, y in zip(_predict(torchgp, ours, Xs), _predict(gpytorch, theirs, Xs)):
        assert_close(x, y)


@pytest.mark.parametrize("noise", list(NOISES))
def test_kronecker_mll_and_predictions_equal_dense(noise):
    X, Y = toy_data(n=10, t=3)
    model = icm_model(torchgp, X, Y, rank=1, **NOISES[noise])
    copy_parameters(model, icm_model(torchgp, X, Y, rank=1, **NOISES[noise]), seed=3)
    model.train()
    noisy = model.likelihood(model(X))
    assert kronecker_sum(noisy.lazy_covariance_matrix) is not None  # the Kronecker solver is the one taken
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    value = mll(model(X), Y)
    grads = torch.autograd.grad(value, list(model.parameters()))
    # the dense reference: log N(vec y; vec μ, A) with A formed whole, differentiated by autograd
    noisy = model.likelihood(model(X))
    A = noisy.lazy_covariance_matrix.to_dense()
    ref = torch.distributions.MultivariateNormal(noisy.loc, A).log_prob(Y.reshape(-1)) / Y.numel()
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    assert_close(value, ref)
    for g, h in zip(grads, ref_grads):
        assert_close(g, h)
    # predictions: R&W Alg. 2.1 on the nt rows, dense
    Xs = torch.rand(4, 1, dtype=D)
    model.eval()
    with torch.no_grad():
        post = model(Xs)
        Xf = torch.cat([X, Xs])
        with torchgp.settings.prior_mode():
            full = model(Xf)
        C = full.lazy_covariance_matrix.to_dense()
        nt = Y.numel()
        r = (Y - full.mean[: X.shape[0]]).reshape(-1)
        mean = full.loc[nt:] + C[nt:, :nt] @ torch.linalg.solve(A, r)
        cov = C[nt:, nt:] - C[nt:, :nt] @ torch.linalg.solve(A, C[:nt, nt:])
    assert_close(post.mean.reshape(-1), mean)
    assert_close(post.variance.reshape(-1), cov.diagonal())
    assert_close(post.covariance_matrix, cov)
    rows = torch.arange(cov.shape[-1]).reshape(4, 3)  # the interleaved rows of each test point
    blocks = post.to_data_independent_dist(jitter_val=0.0).covariance_matrix
    assert_close(blocks, cov[rows[:, :, None], rows[:, None, :]])


def test_interleaved_and_task_major_models_agree():
    X, Y = toy_data(n=9, t=2)
    a, b = icm_model(torchgp, X, Y, lik_rank=1), icm_model(torchgp, X, Y, lik_rank=1, interleaved=False)
    copy_parameters(a, b)
    va, ga = _mll_and_grads(torchgp, a, X, Y)
    vb, gb = _mll_and_grads(torchgp, b, X, Y)
    assert_close(va, vb)
    for k in ga:
        assert_close(ga[k], gb[k])
    Xs = torch.rand(5, 1, dtype=D)
    for x, y in zip(_predict(torchgp, a, Xs)[:2], _predict(torchgp, b, Xs)[:2]):
        assert_close(x, y)
    with torch.no_grad():
        pa, pb = a(Xs).to_data_independent_dist(), b(Xs).to_data_independent_dist()
    assert_close(pa.covariance_matrix, pb.covariance_matrix)  # each point's task block, from either order


def test_kronecker_path_never_forms_the_nt_by_nt_matrix():
    X, Y = toy_data(n=40, t=4)
    model = icm_model(torchgp, X, Y, lik_rank=1)
    budget = 8 * 60 * 60  # room for n × n blocks, not for the (nt)² = 160² matrix
    with torchgp.settings.max_dense_memory(budget):
        _, grads = _mll_and_grads(torchgp, model, X, Y)
        model.eval()
        with torch.no_grad():
            post = model.likelihood(model(torch.rand(20, 1, dtype=D)))
            assert post.mean.shape == post.variance.shape == (20, 4)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_batch_independent_outputs_match_gpytorch():
    X, Y = toy_data(n=10, t=3)
    ours, theirs = batch_independent_model(torchgp, X, Y), batch_independent_model(gpytorch, X, Y)
    copy_parameters(ours, theirs)
    a, ga = _mll_and_grads(torchgp, ours, X, Y)
    b, gb = _mll_and_grads(gpytorch, theirs, X, Y)
    assert_close(a, b)
    for k in ga:
        assert_close(ga[k], gb[k])
    Xs = torch.rand(6, 1, dtype=D)
    mine, ref = _predict(torchgp, ours, Xs), _predict(gpytorch, theirs, Xs)
    for i in range(5):  # from_batch_mvn is interleaved in both: the same covariance_matrix, row i t + a
        assert_close(mine[i], ref[i])


def test_lcm_with_one_component_equals_icm():
    X, Y = toy_data(n=8, t=3)
    icm = icm_model(torchgp, X, Y, rank=1)

    class LCM(torchgp.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = torchgp.means.MultitaskMean(torchgp.means.ConstantMean(), num_tasks=3)
            self.covar_module = torchgp.kernels.LCMKernel([torchgp.kernels.RBFKernel()], num_tasks=3, rank=1)

        def forward(self, x):
            return torchgp.distributions.MultitaskMultivariateNormal(self.mean_module(x), self.covar_module(x))

    lcm = LCM(X, Y, torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=3)).double()
    with torch.no_grad():
        lcm.covar_module.covar_module_list[0].load_state_dict(icm.covar_module.state_dict())
        lcm.likelihood.load_state_dict(icm.likelihood.state_dict())
    assert_close(_mll_and_grads(torchgp, lcm, X, Y)[0], _mll_and_grads(torchgp, icm, X, Y)[0])
    Xs = torch.rand(4, 1, dtype=D)
    for x, y in zip(_predict(torchgp, lcm, Xs), _predict(torchgp, icm, Xs)):
        assert_close(x, y)


def test_two_component_lcm_matches_gpytorch():
    X, Y = toy_data(n=8, t=2)

    def build(lib):
        class LCM(lib.models.ExactGP):
            def __init__(self, x, y, likelihood):
                super().__init__(x, y, likelihood)
                self.mean_module = lib.means.MultitaskMean(lib.means.ConstantMean(), num_tasks=2)
                kernels = [lib.kernels.RBFKernel(), lib.kernels.MaternKernel(nu=2.5)]
                self.covar_module = lib.kernels.LCMKernel(kernels, num_tasks=2, rank=1)

            def forward(self, x):
                return lib.distributions.MultitaskMultivariateNormal(self.mean_module(x), self.covar_module(x))

        return LCM(X, Y, lib.likelihoods.MultitaskGaussianLikelihood(num_tasks=2)).double()

    ours, theirs = build(torchgp), build(gpytorch)
    copy_parameters(ours, theirs)
    a, ga = _mll_and_grads(torchgp, ours, X, Y)
    b, gb = _mll_and_grads(gpytorch, theirs, X, Y)
    assert_close(a, b)
    for k in ga:
        assert_close(ga[k], gb[k])


def test_bad_inputs_raise_clear_errors():
    X, Y = toy_data(n=6, t=3)
    model = icm_model(torchgp, X, Y)
    model.likelihood = torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=2).double()
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    with pytest.raises(ShapeError, match="num_tasks=2"):
        mll(model(X), Y)
    with pytest.raises(InputError, match="rank"):
        torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=2, rank=3)
    with pytest.raises(InputError, match="rank"):
        torchgp.kernels.MultitaskKernel(torchgp.kernels.RBFKernel(), num_tasks=2, rank=3)
    with pytest.raises(InputError, match="noise term"):
        torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=2, has_global_noise=False, has_task_noise=False)
    with pytest.raises(ShapeError, match="n = 6"):
        icm_model(torchgp, X, Y[:4])


def test_fantasy_batch_equals_models_conditioned_on_each_fantasy():
    X, Y = toy_data(n=8, t=2)
    model = icm_model(torchgp, X, Y, lik_rank=1)
    copy_parameters(model, icm_model(torchgp, X, Y, lik_rank=1))
    Xq = torch.rand(3, 1, dtype=D)
    Yq = torch.randn(2, 3, 2, dtype=D)  # two fantasies of the three new points
    model.eval()
    Xs = torch.rand(5, 1, dtype=D)
    with torch.no_grad():
        model(Xs)
        fant = model.get_fantasy_model(Xq, Yq)
        out = fant(Xs)
        assert out.mean.shape == (2, 5, 2)
        for f in range(2):
            ref = icm_model(torchgp, torch.cat([X, Xq]), torch.cat([Y, Yq[f]]), lik_rank=1)
            ref.load_state_dict(model.state_dict())
            ref.eval()
            expected = ref(Xs)
            assert_close(out.mean[f], expected.mean)
            assert_close(out.variance[f], expected.variance)
    with pytest.raises(InputError, match=r"\(\*fantasies, q, 2\)"):
        model.get_fantasy_model(Xq, torch.randn(3, dtype=D))


def test_torchgp_fit_trains_a_multitask_model():
    X, Y = toy_data(n=12, t=2)
    model = icm_model(torchgp, X, Y, lik_rank=1)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    before = mll(model(X), Y).item()
    torchgp.fit(mll, maxiter=15)
    model.train()
    assert mll(model(X), Y).item() > before + 0.1


def test_batch_of_multitask_models_equals_the_loop():
    X, Y = toy_data(n=7, t=2)
    Xb, Yb = torch.stack([X, X**2]), torch.stack([Y, -Y])
    b = torch.Size([2])

    class BatchICM(torchgp.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = torchgp.means.MultitaskMean(torchgp.means.ConstantMean(batch_shape=b), num_tasks=2)
            rbf = torchgp.kernels.RBFKernel(batch_shape=b)
            self.covar_module = torchgp.kernels.MultitaskKernel(rbf, num_tasks=2, rank=1, batch_shape=b)

        def forward(self, x):
            return torchgp.distributions.MultitaskMultivariateNormal(self.mean_module(x), self.covar_module(x))

    lik = torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=2, batch_shape=b)
    batch = BatchICM(Xb, Yb, lik).double()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in batch.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=D))
    batch.train()
    mll = torchgp.mlls.ExactMarginalLogLikelihood(batch.likelihood, batch)(batch(Xb), Yb)
    Xs = torch.rand(4, 1, dtype=D)
    batch.eval()
    with torch.no_grad():
        pred = batch(Xs.expand(2, 4, 1))
    for k in range(2):
        single = icm_model(torchgp, Xb[k], Yb[k], rank=1)
        with torch.no_grad():
            for name, p in single.named_parameters():
                p.copy_(dict(batch.named_parameters())[name][k])
        single.train()
        mk = torchgp.mlls.ExactMarginalLogLikelihood(single.likelihood, single)(single(Xb[k]), Yb[k])
        assert_close(mll[k], mk)
        single.eval()
        with torch.no_grad():
            ref = single(Xs)
        assert_close(pred.mean[k], ref.mean)
        assert_close(pred.variance[k], ref.variance)


def test_prediction_gradients_with_respect_to_test_inputs_match_dense():
    X, Y = toy_data(n=8, t=2)
    kron = icm_model(torchgp, X, Y, lik_rank=1)
    dense = icm_model(torchgp, X, Y, lik_rank=1)
    copy_parameters(kron, dense)
    kron.eval()
    dense.eval()
    Xs = torch.rand(3, 1, dtype=D, requires_grad=True)
    out = kron(Xs)
    g_kron = torch.autograd.grad(out.mean.sum() + out.variance.sum(), Xs)[0]
    # the same posterior through the dense path (Alg. 2.1 on all nt rows), differentiated by autograd
    from torchgp.models.multitask_posterior import MultitaskExactPosterior

    with torchgp.settings.prior_mode():
        prior = dense(X)
    post = MultitaskExactPosterior(prior, dense.likelihood(prior), Y)
    post.kind, post.factor = "dense", torchgp.linalg.solvers.factorize(dense.likelihood(prior).lazy_covariance_matrix)
    post.alpha = post.factor.solve((Y - prior.mean).reshape(-1, 1))
    with torchgp.settings.prior_mode():
        full = dense(torch.cat([X, Xs]))
    ref = post.predict(full, 3)
    g_dense = torch.autograd.grad(ref.mean.sum() + ref.variance.sum(), Xs)[0]
    assert_close(g_kron, g_dense)
