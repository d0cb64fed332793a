r"""GPyTorch's ``gpytorch.models.exact_prediction_strategies`` names over torchgp's exact posterior.

:class:`DefaultPredictionStrategy` is the test-independent part of exact prediction (R&W 2006,
Alg. 2.1) for code written against GPyTorch's strategy objects: it holds an
:class:`~torchgp.models.posterior.ExactPosterior` (``L``, ``α``) and predicts from the test blocks of a
joint covariance. ``ExactGP`` itself uses the same posterior object directly.
"""

from __future__ import annotations

import torch

from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError
from torchgp.linalg.operators import as_operator
from torchgp.models.missing_data import exact_posterior
from torchgp.models.posterior import (
    CrossCovariance,
    ExactPosterior,
    PosteriorCovariance,
    PosteriorMultivariateNormal,
    joint_blocks,
)

__all__ = ["DefaultPredictionStrategy", "prediction_strategy"]


class DefaultPredictionStrategy:
    """Exact prediction from the training prior, labels and a Gaussian likelihood (GPyTorch's signature).

    Args:
        train_inputs: tuple of ``(*batch, n, d)`` tensors (or one tensor).
        train_prior_dist: the prior ``MultivariateNormal`` at the training inputs, ``(*batch, n)``.
        train_labels: ``(*batch, n)``.
        likelihood: a Gaussian likelihood (adds the noise to the training covariance).
        root, inv_root: a known root / inverse root of the noisy training covariance is not used
            (the factor is computed, once): passing one raises :class:`~torchgp.errors.InputError`.

    Attributes:
        posterior: the :class:`~torchgp.models.posterior.ExactPosterior`.
        lik_train_train_covar: ``K + σ²I`` as an operator ``(*batch, n, n)``.
    """

    def __init__(self, train_inputs, train_prior_dist, train_labels, likelihood, root=None, inv_root=None):
        if root is not None or inv_root is not None:
            raise InputError(
                "DefaultPredictionStrategy(root=..., inv_root=...) is not supported: torchgp factorises the "
                "training covariance itself. Leave both None."
            )
        self.train_inputs = (train_inputs,) if torch.is_tensor(train_inputs) else tuple(train_inputs)
        self.train_prior_dist = train_prior_dist
        self.train_labels = train_labels
        self.likelihood = likelihood
        noisy = likelihood(train_prior_dist, *self.train_inputs)
        self.lik_train_train_covar = noisy.lazy_covariance_matrix
        self.posterior: ExactPosterior = exact_posterior(
            self.train_inputs[0], train_labels, train_prior_dist.mean, self.lik_train_train_covar, likelihood
        )

    @property
    def train_shape(self) -> torch.Size:
        return self.train_prior_dist.event_shape

    @property
    def num_train(self) -> int:
        return self.train_shape.numel()

    @property
    def mean_cache(self) -> torch.Tensor:
        """``α = (K + σ²I)⁻¹ (y − μ)``, ``(*batch, n)``."""
        return self.posterior.alpha.squeeze(-1)

    @property
    def covar_cache(self) -> torch.Tensor:
        """LOVE's ``R (*batch, n, k)`` with ``(K + σ²I)⁻¹ ≈ R Rᵀ`` (``settings.max_root_decomposition_size``)."""
        return self.posterior.love_root()

    def exact_prediction(self, test_mean, test_test_covar, test_train_covar):
        """Predictive ``(mean (*batch, t), covariance operator (*batch, t, t))`` from the test blocks."""
        return self.posterior.predict(test_mean, _cross(test_train_covar), as_operator(test_test_covar))

    def exact_predictive_mean(self, test_mean: torch.Tensor, test_train_covar) -> torch.Tensor:
        """``μ* + K*ₓ α``, ``(*batch, t)`` (R&W Alg. 2.1 line 4)."""
        K_sx = test_train_covar if torch.is_tensor(test_train_covar) else test_train_covar.to_dense()
        return test_mean + (K_sx @ self.posterior.alpha).squeeze(-1)

    def exact_predictive_covar(self, test_test_covar, test_train_covar) -> PosteriorCovariance:
        """``K** − K*ₓ (K + σ²I)⁻¹ Kₓ*`` as a lazy operator ``(*batch, t, t)`` (Alg. 2.1 line 6)."""
        return PosteriorCovariance(self.posterior, _cross(test_train_covar), as_operator(test_test_covar))

    def predict(self, joint: MultivariateNormal) -> MultivariateNormal:
        """The posterior at the test points of a joint prior over ``[train; test]`` ``(*batch, n + t)``."""
        n = self.train_shape[-1]
        K_sx, test_covar = joint_blocks(joint.lazy_covariance_matrix, n)
        return PosteriorMultivariateNormal(*self.posterior.predict(joint.mean[..., n:], K_sx, test_covar))


def _cross(test_train_covar) -> CrossCovariance:
    if isinstance(test_train_covar, CrossCovariance):
        return test_train_covar
    K_sx = test_train_covar if torch.is_tensor(test_train_covar) else test_train_covar.to_dense()
    return CrossCovariance.from_tensor(K_sx)


def prediction_strategy(train_inputs, train_prior_dist, train_labels, likelihood) -> DefaultPredictionStrategy:
    """The prediction strategy for an exact GP's training prior (GPyTorch's factory function)."""
    return DefaultPredictionStrategy(train_inputs, train_prior_dist, train_labels, likelihood)
