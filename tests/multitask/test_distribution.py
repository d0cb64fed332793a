"""MultitaskMultivariateNormal: orderings, constructors, views, sampling and log_prob against dense references."""

from __future__ import annotations

import gpytorch
import pytest
import torch

from tests._tol import assert_close
from torchgp.distributions import MultitaskMultivariateNormal, MultivariateNormal
from torchgp.errors import ShapeError
from torchgp.linalg.kronecker_solve import kronecker_sum
from torchgp.linalg.operators import DenseOperator, KroneckerProductOperator

D = torch.float64


def _spd(n, seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(*batch, n, n, generator=g, dtype=D)
    return A @ A.mT + 0.5 * torch.eye(n, dtype=D)


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("batch", [(), (2,)])
def test_moments_log_prob_and_samples_match_gpytorch(interleaved, batch):
    n, t = 4, 3
    mean = torch.randn(*batch, n, t, dtype=D)
    cov = _spd(n * t, batch=batch)
    d = MultitaskMultivariateNormal(mean, cov, interleaved=interleaved)
    ref = gpytorch.distributions.MultitaskMultivariateNormal(mean, cov, interleaved=interleaved)
    assert d.event_shape == (n, t) and d.batch_shape == batch and d.num_tasks == t
    assert_close(d.mean, ref.mean)
    assert_close(d.variance, ref.variance)
    lo, hi = d.confidence_region()
    assert_close(lo, ref.confidence_region()[0])
    assert_close(hi, ref.confidence_region()[1])
    y = torch.randn(5, *batch, n, t, dtype=D)
    # the dense reference over vec(y) in the covariance's row order (GPyTorch 1.15.2's task-major log_prob
    # reads the values in another order, so it is the reference only for the interleaved one)
    flat = y.reshape(5, *batch, -1) if interleaved else y.mT.reshape(5, *batch, -1)
    flat_mean = mean.reshape(*batch, -1) if interleaved else mean.mT.reshape(*batch, -1)
    assert_close(d.log_prob(y), torch.distributions.MultivariateNormal(flat_mean, cov).log_prob(flat))
    if interleaved:
        assert_close(d.log_prob(y), ref.log_prob(y))
    base = torch.randn(6, *batch, n, t, dtype=D)
    assert_close(d.rsample(base_samples=base), ref.rsample(base_samples=base))
    assert d.rsample(torch.Size([7])).shape == (7, *batch, n, t)
    assert_close(d.entropy(), ref.entropy())


def test_orders_agree_on_the_same_distribution():
    # K_x ⊗ K_t interleaved and K_t ⊗ K_x task-major describe the same Gaussian over (n, t) values
    n, t = 5, 2
    Kx, Kt = _spd(n, 1), _spd(t, 2)
    mean = torch.randn(n, t, dtype=D)
    a = MultitaskMultivariateNormal(mean, KroneckerProductOperator(Kx, Kt), interleaved=True)
    b = MultitaskMultivariateNormal(mean, KroneckerProductOperator(Kt, Kx), interleaved=False)
    y = torch.randn(n, t, dtype=D)
    assert_close(a.log_prob(y), b.log_prob(y))
    assert_close(a.variance, b.variance)
    assert_close(a.variance, Kx.diagonal()[:, None] * Kt.diagonal()[None, :])
    base = torch.randn(3, n, t, dtype=D)
    assert_close(a.mean, b.mean)
    assert a.rsample(base_samples=base).shape == b.rsample(base_samples=base).shape == (3, n, t)


def test_kronecker_log_prob_runs_the_kronecker_solver_and_equals_dense():
    n, t = 6, 3
    Kx, Kt = _spd(n, 1), _spd(t, 2)
    op = KroneckerProductOperator(DenseOperator(Kx), DenseOperator(Kt)).add_diagonal(torch.tensor(0.3, dtype=D))
    assert kronecker_sum(op) is not None
    mean = torch.randn(n, t, dtype=D)
    y = torch.randn(n, t, dtype=D)
    d = MultitaskMultivariateNormal(mean, op)
    dense = torch.distributions.MultivariateNormal(mean.reshape(-1), op.to_dense())
    assert_close(d.log_prob(y), dense.log_prob(y.reshape(-1)))


def test_from_batch_mvn_and_independent_mvns():
    n, t = 4, 3
    means = torch.randn(t, n, dtype=D)
    covs = _spd(n, batch=(t,))
    batch_mvn = MultivariateNormal(means, covs)
    d = MultitaskMultivariateNormal.from_batch_mvn(batch_mvn, task_dim=-1)
    ref = gpytorch.distributions.MultitaskMultivariateNormal.from_batch_mvn(
        gpytorch.distributions.MultivariateNormal(means, covs), task_dim=-1
    )
    y = torch.randn(n, t, dtype=D)
    assert d.event_shape == (n, t)
    assert_close(d.mean, ref.mean)
    assert_close(d.variance, ref.variance)
    assert_close(d.log_prob(y), ref.log_prob(y))
    ind = MultitaskMultivariateNormal.from_independent_mvns([MultivariateNormal(means[i], covs[i]) for i in range(t)])
    assert_close(ind.log_prob(y), ref.log_prob(y))
    rep = MultitaskMultivariateNormal.from_repeated_mvn(MultivariateNormal(means[0], covs[0]), num_tasks=t)
    expected = sum(MultivariateNormal(means[0], covs[0]).log_prob(y[:, i]) for i in range(t))
    assert_close(rep.log_prob(y), expected)
    with pytest.raises(ShapeError, match="task_dim"):
        MultitaskMultivariateNormal.from_batch_mvn(MultivariateNormal(means[0], covs[0]))
    with pytest.raises(ShapeError, match="at least 2"):
        MultitaskMultivariateNormal.from_independent_mvns([MultivariateNormal(means[0], covs[0])])


@pytest.mark.parametrize("interleaved", [True, False])
def test_data_independent_dist_and_indexing(interleaved):
    n, t = 3, 2
    mean = torch.randn(n, t, dtype=D)
    cov = _spd(n * t)
    d = MultitaskMultivariateNormal(mean, cov, interleaved=interleaved)
    ref = gpytorch.distributions.MultitaskMultivariateNormal(mean, cov, interleaved=interleaved)
    a, b = d.to_data_independent_dist(), ref.to_data_independent_dist()
    assert a.batch_shape == b.batch_shape == (n,)
    assert_close(a.covariance_matrix, b.covariance_matrix.to_dense() if hasattr(b, "covariance_matrix") else b)
    for idx in [(..., 1), (1, slice(None)), (slice(None), 0)]:
        mine, theirs = d[idx], ref[idx]
        assert_close(mine.mean, theirs.mean)
        assert_close(mine.covariance_matrix, theirs.covariance_matrix)
    one = d[2, 1]  # a single (point, task): a one-dimensional MVN
    row = 2 * t + 1 if interleaved else 1 * n + 2
    assert_close(one.mean, mean[2, 1:2])
    assert_close(one.covariance_matrix, cov[row, row].reshape(1, 1))
    sub = d[0:2, :]
    assert isinstance(sub, MultitaskMultivariateNormal) and sub.event_shape == (2, t)
    assert_close(sub.variance, d.variance[0:2])


def test_errors_name_the_shapes():
    with pytest.raises(ShapeError, match=r"\(\*batch, n, t\)"):
        MultitaskMultivariateNormal(torch.zeros(6, dtype=D), torch.eye(6, dtype=D))
    with pytest.raises(ShapeError, match="does not match"):
        MultitaskMultivariateNormal(torch.zeros(2, 4, dtype=D), torch.eye(6, dtype=D))
    d = MultitaskMultivariateNormal(torch.zeros(3, 2, dtype=D), torch.eye(6, dtype=D))
    with pytest.raises(ShapeError, match=r"\(\*batch, 3, 2\)"):
        d.log_prob(torch.zeros(6, dtype=D))


@pytest.mark.parametrize("interleaved", [True, False])
def test_task_blocks_of_structured_covariances_equal_the_dense_blocks(interleaved):
    n, t = 4, 3
    Kx, Kt = _spd(n, 1), _spd(t, 2)
    factors = (DenseOperator(Kx), DenseOperator(Kt)) if interleaved else (DenseOperator(Kt), DenseOperator(Kx))
    kron = KroneckerProductOperator(*factors)
    ops = [kron, kron.add_diagonal(torch.tensor(0.2, dtype=D)), kron + kron, DenseOperator(_spd(n * t, 3))]
    for op in ops:
        d = MultitaskMultivariateNormal(torch.zeros(n, t, dtype=D), op, interleaved=interleaved)
        dense = MultitaskMultivariateNormal(torch.zeros(n, t, dtype=D), op.to_dense(), interleaved=interleaved)
        assert_close(d.to_data_independent_dist().covariance_matrix, dense.to_data_independent_dist().covariance_matrix)
