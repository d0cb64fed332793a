"""torchgp.metrics against GPyTorch's numbers and closed forms, single and batched."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp import metrics

gpytorch = pytest.importorskip("gpytorch")


def _dists(batch=(), n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(*batch, n, generator=g, dtype=torch.float64)
    A = torch.randn(*batch, n, n, generator=g, dtype=torch.float64)
    S = A @ A.mT / n + 0.5 * torch.eye(n, dtype=torch.float64)
    y = mu + torch.randn(*batch, n, generator=g, dtype=torch.float64)
    y_train = torch.randn(*batch, 25, generator=g, dtype=torch.float64)
    ours = torchgp.distributions.MultivariateNormal(mu, S)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = gpytorch.distributions.MultivariateNormal(mu, S)
    return ours, theirs, y, y_train


@pytest.mark.parametrize("name", metrics.__all__)
def test_metric_equals_gpytorch(name):
    ours, theirs, y, y_train = _dists()
    kwargs = {"train_y": y_train} if name == "mean_standardized_log_loss" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = getattr(gpytorch.metrics, name)(theirs, y, **kwargs)
    assert_close(getattr(metrics, name)(ours, y, **kwargs), expected, loose=10)


@pytest.mark.parametrize("name", metrics.__all__)
def test_batched_metric_equals_loop(name):
    ours, _, y, y_train = _dists(batch=(3,))
    kwargs = {"train_y": y_train} if name == "mean_standardized_log_loss" else {}
    batched = getattr(metrics, name)(ours, y, **kwargs)
    assert batched.shape == (3,)
    for b in range(3):
        one = torchgp.distributions.MultivariateNormal(ours.mean[b], ours.covariance_matrix[b])
        if name == "standardized_mean_squared_error":  # the variance is over all entries, as in GPyTorch
            expected = metrics.mean_squared_error(one, y[b]) / y.var()
        elif name == "mean_standardized_log_loss":
            v0 = y_train.var()
            trivial = (0.5 * torch.log(2 * math.pi * v0) + (y[b] - y_train[b].mean()).square() / (2 * v0)).mean()
            expected = metrics.mean_standardized_log_loss(one, y[b]) - trivial
        else:
            expected = getattr(metrics, name)(one, y[b])
        assert_close(batched[b], expected)


def test_closed_forms():
    mu = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    var = torch.tensor([1.0, 4.0, 0.25, 1.0], dtype=torch.float64)
    y = torch.tensor([1.0, -1.0, 2.5, 3.0], dtype=torch.float64)
    d = torchgp.distributions.MultivariateNormal(mu, torch.diag(var))
    err = y - mu
    assert_close(metrics.mean_absolute_error(d, y), err.abs().mean())
    assert_close(metrics.mean_squared_error(d, y), err.square().mean())
    assert_close(metrics.mean_squared_error(d, y, squared=False), err.square().mean().sqrt())
    assert_close(metrics.standardized_mean_squared_error(d, y), err.square().mean() / y.var())
    ll = 0.5 * torch.log(2 * math.pi * var) + err.square() / (2 * var)
    assert_close(metrics.mean_standardized_log_loss(d, y), ll.mean())
    assert_close(metrics.negative_log_predictive_density(d, y), ll.mean())  # diagonal covariance: NLPD = mean loss
    y_train = torch.tensor([0.0, 2.0, 4.0], dtype=torch.float64)
    trivial = 0.5 * torch.log(2 * math.pi * y_train.var()) + (y - 2.0).square() / (2 * y_train.var())
    assert_close(metrics.mean_standardized_log_loss(d, y, train_y=y_train), (ll - trivial).mean())
    # 68.27% interval is μ ± σ: points 0 (|err| = σ, on the boundary), 2 (2σ) are outside, 1 (σ/2... ) inside
    q = 100 * math.erf(1 / math.sqrt(2))
    inside = (err.abs() < var.sqrt()).double().mean()
    assert_close(metrics.quantile_coverage_error(d, y, quantile=q), (inside - q / 100).abs(), loose=1e4)


def test_quantile_outside_range_raises():
    ours, _, y, _ = _dists()
    for q in (0.0, 100.0, -5.0):
        with pytest.raises(torchgp.errors.InputError, match="between 0 and 100"):
            metrics.quantile_coverage_error(ours, y, quantile=q)
