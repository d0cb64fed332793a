"""Independent tasks as GPyTorch builds them: ``from_batch_mvn`` / ``from_repeated_mvn`` are interleaved, with the
same covariance matrix, densities, samples and views as GPyTorch's; batch-independent exact GPs (the tutorial's and
``IndependentMultitaskGPModel``) give GPyTorch's MLL, gradients and predictions, solved one block per task."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.compat._harness import adam_losses, assert_same, run_both
from tests.multitask._models import D, batch_independent_model, copy_parameters, toy_data
from torchgp.linalg.operators import BlockInterleavedOperator, KroneckerProductOperator
from torchgp.models.builders import IndependentMultitaskGPModel

N, T = 4, 3


def _spd(*shape):
    W = torch.randn(*shape, shape[-1], dtype=D)
    return W @ W.mT + torch.eye(shape[-1], dtype=D)


def _views(gp, mt, share, rank):
    """What user code reads from a multitask MVN, and from a MultitaskGaussianLikelihood's marginal of it."""
    n, t = mt.event_shape
    y = torch.randn(*mt.batch_shape, n, t, dtype=D)
    base = torch.randn(2, *mt.batch_shape, n, t, dtype=D)
    lik = gp.likelihoods.MultitaskGaussianLikelihood(num_tasks=t, rank=rank).double()
    share(lik)
    marg = lik(mt)
    ind = mt.to_data_independent_dist()
    return {
        "interleaved": torch.tensor(float(mt._interleaved)),
        "cov": mt.covariance_matrix,
        "lazy": mt.lazy_covariance_matrix.to_dense(),
        "lazy_shape": torch.tensor(mt.lazy_covariance_matrix.shape),
        "mean": mt.mean,
        "variance": mt.variance,
        "log_prob": mt.log_prob(y),
        "sample": mt.rsample(base_samples=base),
        "independent_mean": ind.mean,
        "independent_cov": ind.covariance_matrix,
        "marginal_interleaved": torch.tensor(float(marg._interleaved)),
        "marginal_cov": marg.covariance_matrix,
        "marginal_variance": marg.variance,
        "marginal_log_prob": marg.log_prob(y),
    }


@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("layout", ["tasks_last", "tasks_first", "repeated"])
def test_independent_tasks_are_gpytorchs_distribution(layout, rank):
    def program(gp, share):
        MVN, MT = gp.distributions.MultivariateNormal, gp.distributions.MultitaskMultivariateNormal
        if layout == "tasks_last":  # batch (2, t), task_dim = -1
            mt = MT.from_batch_mvn(MVN(torch.randn(2, T, N, dtype=D), _spd(2, T, N)), task_dim=-1)
        elif layout == "tasks_first":  # batch (t, 2), task_dim = 0
            mt = MT.from_batch_mvn(MVN(torch.randn(T, 2, N, dtype=D), _spd(T, 2, N)), task_dim=0)
        else:
            mt = MT.from_repeated_mvn(MVN(torch.randn(2, N, dtype=D), _spd(2, N)), num_tasks=T)
        return _views(gp, mt, share, rank)

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-10, atol=1e-10)


def test_indexing_and_arithmetic_of_independent_tasks_are_gpytorchs():
    def program(gp, share):
        MVN, MT = gp.distributions.MultivariateNormal, gp.distributions.MultitaskMultivariateNormal
        mt = MT.from_batch_mvn(MVN(torch.randn(T, N, dtype=D), _spd(T, N)))
        sub = mt[1:3, :]  # points 1 and 2, every task
        batched = MT.from_batch_mvn(MVN(torch.randn(2, T, N, dtype=D), _spd(2, T, N)))
        return {
            "task": mt[..., 1].covariance_matrix,
            "task_mean": mt[..., 1].mean,
            "point": mt[..., 2, :].covariance_matrix,
            "points": sub.covariance_matrix,
            "points_mean": sub.mean,
            "points_interleaved": torch.tensor(float(sub._interleaved)),
            "batch_member": batched[1].covariance_matrix,
            "batched_task": batched[..., 2].covariance_matrix,
            "batched_point": batched[1, 3, :].covariance_matrix,
            "batched_points": batched[:, 0:2, :].covariance_matrix,
            "entropy": batched.entropy(),
            "sum": (batched + batched).covariance_matrix,
            "scaled": (batched * 2.0).covariance_matrix,
            "jitter": batched.add_jitter(0.1).covariance_matrix,
            "expanded": batched.expand(torch.Size([3, 2])).covariance_matrix,
            "region": torch.stack(batched.confidence_region()),
        }

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-10, atol=1e-10)


def test_the_covariances_keep_their_structure():
    MVN, MT = torchgp.distributions.MultivariateNormal, torchgp.distributions.MultitaskMultivariateNormal
    mt = MT.from_batch_mvn(MVN(torch.randn(T, N, dtype=D), _spd(T, N)))
    assert mt._interleaved and isinstance(mt.lazy_covariance_matrix, BlockInterleavedOperator)
    marg = torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=T).double()(mt)
    assert isinstance(marg.lazy_covariance_matrix, BlockInterleavedOperator)  # the diagonal noise joins the blocks
    rep = MT.from_repeated_mvn(MVN(torch.zeros(N, dtype=D), _spd(N)), num_tasks=T)
    assert rep._interleaved and isinstance(rep.lazy_covariance_matrix, KroneckerProductOperator)
    # the interleaved factor is made of the per-task factors
    assert_close(mt.scale_tril, torch.linalg.cholesky(mt.covariance_matrix))


def _mll_grads_predictions(lib, model, X, Y, Xs):
    model.train()
    mll = lib.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    loss = mll(model(X), Y)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()))
    model.eval()
    with torch.no_grad(), lib.settings.fast_pred_var(False):
        f = model(Xs)
        y = model.likelihood(f)
        out = {"mll": loss.detach(), "mean": f.mean, "variance": f.variance, "cov": f.covariance_matrix}
        out.update({"noisy_mean": y.mean, "noisy_variance": y.variance, "noisy_cov": y.covariance_matrix})
        out["interleaved"] = torch.tensor(float(f._interleaved))
    out.update({f"grad/{k}": g for k, g in zip(params, grads)})
    return out


def test_the_batch_independent_tutorial_model_is_gpytorchs():
    X, Y = toy_data(n=12, t=3)
    Xs = torch.rand(5, 1, generator=torch.Generator().manual_seed(3), dtype=D)
    ours, theirs = batch_independent_model(torchgp, X, Y), batch_independent_model(gpytorch, X, Y)
    copy_parameters(ours, theirs)
    a = _mll_grads_predictions(torchgp, ours, X, Y, Xs)
    b = _mll_grads_predictions(gpytorch, theirs, X, Y, Xs)
    assert_same(b, a, rtol=1e-8, atol=1e-8)
    assert ours._cache[2].kind == "blocks"  # one Cholesky factor per task


def _repeated_model(lib, X, Y, rank):
    """One GP shared by every task (``from_repeated_mvn``), multitask Gaussian noise of the given rank."""
    t = Y.shape[-1]

    class Repeated(lib.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = lib.means.ConstantMean()
            self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel())

        def forward(self, x):
            mvn = lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))
            return lib.distributions.MultitaskMultivariateNormal.from_repeated_mvn(mvn, num_tasks=t)

    return Repeated(X, Y, lib.likelihoods.MultitaskGaussianLikelihood(num_tasks=t, rank=rank)).double()


@pytest.mark.parametrize("rank", [0, 1])
def test_a_gp_repeated_over_the_tasks_is_gpytorchs(rank):
    X, Y = toy_data(n=10, t=3)
    Xs = torch.rand(4, 1, generator=torch.Generator().manual_seed(5), dtype=D)
    ours, theirs = _repeated_model(torchgp, X, Y, rank), _repeated_model(gpytorch, X, Y, rank)
    copy_parameters(ours, theirs)
    a = _mll_grads_predictions(torchgp, ours, X, Y, Xs)
    b = _mll_grads_predictions(gpytorch, theirs, X, Y, Xs)
    assert_same(b, a, rtol=1e-8, atol=1e-8)
    assert ours._cache[2].kind == "kronecker"  # K ⊗ I_t + I_n ⊗ Σ_t: per-factor eigendecompositions


def test_batch_independent_training_is_gpytorchs():
    def program(gp, share):
        X, Y = toy_data(n=10, t=2)
        model = batch_independent_model(gp, X, Y)
        share(model)
        mll = gp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        model.train()
        losses = adam_losses(model, lambda: -mll(model(X), Y), steps=4)
        model.eval()
        with torch.no_grad():
            f = model.likelihood(model(torch.linspace(0, 1, 4, dtype=D).unsqueeze(-1)))
        return {"losses": losses, "mean": f.mean, "cov": f.covariance_matrix}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-7, atol=1e-7)


def test_the_builder_model_never_forms_the_nt_by_nt_matrix():
    n, t = 40, 4
    X, Y = toy_data(n=n, t=t)
    model = IndependentMultitaskGPModel(X, Y).double()
    budget = 8 * t * n * n * 3  # room for t blocks n × n (and copies), not for the (nt)² = 160² matrix
    with torchgp.settings.max_dense_memory(budget):
        model.train()
        mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        loss = mll(model(X), Y)
        loss.backward()
        model.eval()
        with torch.no_grad():
            post = model.likelihood(model(torch.rand(10, 1, dtype=D)))
            assert post.mean.shape == post.variance.shape == (10, t)
            assert isinstance(post.lazy_covariance_matrix, BlockInterleavedOperator)
    assert model._cache[2].kind == "blocks"
    model.train()
    prior = model(X)
    with pytest.raises(torchgp.errors.KernelMemoryError), torchgp.settings.max_dense_memory(budget):
        prior.covariance_matrix  # the whole matrix is what the budget refuses
    # the MLL is the sum of the t single-output MLLs (independent outputs)
    marg = model.likelihood(prior)
    blocks = marg.lazy_covariance_matrix.base.to_dense()
    per_task = [torch.distributions.MultivariateNormal(prior.mean[:, a], blocks[a]).log_prob(Y[:, a]) for a in range(t)]
    assert_close(loss.detach() * n * t, torch.stack(per_task).sum().detach())
