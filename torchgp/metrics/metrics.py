r"""Predictive-quality metrics of a predictive distribution against test targets (GPyTorch's ``gpytorch.metrics``).

Each metric averages over the data dimension (``n``; for a multitask distribution with event shape
``(n, t)``, over ``n`` per task) and keeps the batch dimensions: for ``pred_dist`` of batch shape
``(*batch)`` and ``test_y (*batch, n)`` the result has shape ``(*batch)`` (``(*batch, t)`` multitask).
Definitions follow Rasmussen & Williams (2006), §2.5.
"""

from __future__ import annotations

import math

import torch

from torchgp.errors import InputError

__all__ = [
    "mean_absolute_error",
    "mean_squared_error",
    "standardized_mean_squared_error",
    "mean_standardized_log_loss",
    "negative_log_predictive_density",
    "quantile_coverage_error",
]

_LOG_2PI = math.log(2 * math.pi)


def _data_dim(pred_dist) -> int:
    # a multitask distribution has event shape (n, t): average over n, keep the tasks
    return -2 if len(pred_dist.event_shape) == 2 else -1


def mean_absolute_error(pred_dist, test_y: torch.Tensor) -> torch.Tensor:
    r"""Mean absolute error of the predictive mean, :math:`\frac1n \sum_i |\mu_i - y_i|`.

    Shapes:
        ``test_y (*batch, n)`` (``(*batch, n, t)`` multitask) → ``(*batch)`` (``(*batch, t)``).
    """
    return (pred_dist.mean - test_y).abs().mean(dim=_data_dim(pred_dist))


def mean_squared_error(pred_dist, test_y: torch.Tensor, squared: bool = True) -> torch.Tensor:
    r"""Mean squared error of the predictive mean, :math:`\frac1n \sum_i (\mu_i - y_i)^2` (its root if not ``squared``).

    Shapes:
        as :func:`mean_absolute_error`.
    """
    mse = (pred_dist.mean - test_y).square().mean(dim=_data_dim(pred_dist))
    return mse if squared else mse.sqrt()


def standardized_mean_squared_error(pred_dist, test_y: torch.Tensor) -> torch.Tensor:
    r"""MSE divided by the variance of the test targets (R&W 2006, §2.5): 1 for predicting their mean.

    The variance is the unbiased one over all entries of ``test_y``.

    Shapes:
        as :func:`mean_absolute_error`.
    """
    return mean_squared_error(pred_dist, test_y) / test_y.var()


def negative_log_predictive_density(pred_dist, test_y: torch.Tensor) -> torch.Tensor:
    r"""Negative joint log predictive density per test point, :math:`-\log p(\mathbf y_* \mid \mathcal D) / n`.

    Uses the full predictive covariance (``pred_dist.log_prob``).

    Shapes:
        ``test_y (*batch, n)`` → ``(*batch)``.
    """
    return -pred_dist.log_prob(test_y) / test_y.shape[_data_dim(pred_dist)]


def mean_standardized_log_loss(pred_dist, test_y: torch.Tensor, train_y: torch.Tensor | None = None) -> torch.Tensor:
    r"""Mean (standardized) log loss, R&W (2006) §2.5, eq. on p. 23.

    The log loss of each point under its marginal predictive :math:`\mathcal N(\mu_i, \sigma_i^2)`,

    .. math:: \ell_i = \tfrac12 \log(2\pi\sigma_i^2) + \frac{(y_i - \mu_i)^2}{2\sigma_i^2},

    averaged over the points; with ``train_y``, the same loss under the trivial model
    :math:`\mathcal N(\bar y_{\text{train}}, s^2_{\text{train}})` is subtracted (negative is better than trivial).

    Shapes:
        ``test_y (*batch, n)``, ``train_y (*batch, n_train)`` → ``(*batch)``.
    """
    dim = _data_dim(pred_dist)
    mean, var = pred_dist.mean, pred_dist.variance
    loss = (0.5 * (_LOG_2PI + torch.log(var)) + (test_y - mean).square() / (2 * var)).mean(dim=dim)
    if train_y is None:
        return loss
    mu0 = train_y.mean(dim=dim, keepdim=True)
    var0 = train_y.var()
    trivial = (0.5 * (_LOG_2PI + torch.log(var0)) + (test_y - mu0).square() / (2 * var0)).mean(dim=dim)
    return loss - trivial


def quantile_coverage_error(pred_dist, test_y: torch.Tensor, quantile: float = 95.0) -> torch.Tensor:
    r"""``|coverage - quantile/100|``: how far the share of test points inside the central predictive interval
    of ``quantile`` percent is from ``quantile`` percent.

    The interval is :math:`\mu_i \pm z\,\sigma_i` with :math:`z = \Phi^{-1}(\tfrac12 + \tfrac{q}{200})`;
    points on its boundary count as outside.

    Args:
        quantile: the interval's probability in percent, strictly between 0 and 100.

    Shapes:
        as :func:`mean_absolute_error`.
    """
    if not 0 < quantile < 100:
        raise InputError(f"quantile must be a percentage strictly between 0 and 100; got {quantile!r}.")
    dim = _data_dim(pred_dist)
    mean, std = pred_dist.mean, pred_dist.stddev
    z = torch.special.ndtri(torch.tensor(0.5 + quantile / 200, dtype=mean.dtype, device=mean.device))
    inside = ((test_y > mean - z * std) & (test_y < mean + z * std)).to(mean.dtype)
    return (inside.mean(dim=dim) - quantile / 100).abs()
