r"""Multi-class classification: :math:`p(y = c \mid \mathbf f) = \mathrm{softmax}(W \mathbf f)_c`.

``f`` has ``num_features`` latent functions per point; the optional mixing matrix ``W``
``(num_classes, num_features)`` maps them to class logits (Hensman et al. 2015, §4, uses
``W = I`` with one GP per class). Expectations under ``q(f)`` use Monte-Carlo samples
(``settings.num_likelihood_samples``), as the softmax has no low-dimensional quadrature.
"""

from __future__ import annotations

import torch
from torch import nn

from torchgp import settings
from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError, ShapeError
from torchgp.likelihoods.likelihood import Likelihood


class SoftmaxLikelihood(Likelihood):
    """Softmax over (mixed) latent functions (GPyTorch's interface).

    Args:
        num_features: number of latent GPs per point.
        num_classes: number of classes ``C``; labels are integers in ``[0, C)``.
        mixing_weights: learn ``W`` ``(C, num_features)``; if False, ``num_features`` must equal ``C``.
        mixing_weights_prior: optional prior on ``W``.

    Shapes:
        ``likelihood(f (*samples, *batch, n, num_features))`` → Categorical ``(*samples, *batch, n)``;
        ``likelihood(q(f))`` with ``q(f)`` a batch MVN of batch shape ``(*batch, num_features)`` and
        event ``(n,)`` (one GP per feature, e.g. ``batch_shape=[num_features]``) or with mean
        ``(*batch, n, num_features)`` (multitask) → Categorical ``(S, *batch, n)`` over
        ``S = settings.num_likelihood_samples`` draws (average ``.probs`` over the first dimension);
        ``expected_log_prob(y (*batch, n), q(f))`` → ``(*batch, n)``.
    """

    def __init__(
        self,
        num_features: int | None = None,
        num_classes: int | None = None,
        mixing_weights: bool = True,
        mixing_weights_prior=None,
        **kwargs,
    ):
        super().__init__()
        if num_classes is None or int(num_classes) < 2:
            raise InputError(f"SoftmaxLikelihood needs num_classes ≥ 2; got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self.num_features = self.num_classes if num_features is None else int(num_features)
        if mixing_weights:
            self.register_parameter("mixing_weights", nn.Parameter(torch.randn(self.num_classes, self.num_features)))
            if mixing_weights_prior is not None:
                self.register_prior("mixing_weights_prior", mixing_weights_prior, "mixing_weights")
        else:
            if self.num_features != self.num_classes:
                raise InputError(
                    f"mixing_weights=False needs num_features == num_classes; got {self.num_features} and "
                    f"{self.num_classes}. Pass mixing_weights=True to learn a map between them."
                )
            self.mixing_weights = None

    def forward(self, function_samples: torch.Tensor, *args, **kwargs) -> torch.distributions.Categorical:
        if function_samples.shape[-1] != self.num_features:
            raise ShapeError(
                f"SoftmaxLikelihood expects function values (..., n, num_features={self.num_features}); got shape "
                f"{tuple(function_samples.shape)}."
            )
        logits = function_samples if self.mixing_weights is None else function_samples @ self.mixing_weights.mT
        return torch.distributions.Categorical(logits=logits, validate_args=False)

    def _samples(self, function_dist) -> torch.Tensor:
        """Draws ``(s, *batch, n, num_features)`` from the independent marginals of ``q(f)``."""
        num = settings.num_likelihood_samples.value()
        mean, std = function_dist.mean, function_dist.stddev
        if (
            isinstance(function_dist, MultivariateNormal)
            and mean.dim() >= 2
            and mean.shape[-2] == self.num_features
            and not getattr(function_dist, "_is_multitask", False)
        ):
            mean, std = mean.transpose(-1, -2), std.transpose(-1, -2)  # batch GP (.., t, n) → (.., n, t)
        if mean.shape[-1] != self.num_features:
            raise ShapeError(
                f"SoftmaxLikelihood needs q(f) with num_features = {self.num_features} latent functions: a batch MVN "
                f"of batch shape (..., {self.num_features}) or a multitask MVN; got mean of shape {tuple(mean.shape)}."
            )
        eps = torch.randn(num, *mean.shape, dtype=mean.dtype, device=mean.device)
        return mean + std * eps

    def _check_labels(self, y):
        if settings.debug.on() and (
            torch.any(y < 0) or torch.any(y >= self.num_classes) or torch.any(y != torch.round(y))
        ):
            raise InputError(f"SoftmaxLikelihood needs integer labels in [0, {self.num_classes}); got other values.")

    def marginal(self, function_dist, *args, **kwargs) -> torch.distributions.Categorical:
        """Categorical ``(S, *batch, n)`` at ``S = settings.num_likelihood_samples`` draws of ``f`` (as GPyTorch);
        ``.probs.mean(0)`` ``(*batch, n, C)`` are the predictive class probabilities."""
        return self.forward(self._samples(function_dist))

    def expected_log_prob(self, observations, function_dist, *args, **kwargs):
        self._check_labels(observations)
        return self.forward(self._samples(function_dist)).log_prob(observations.long()).mean(0)

    def log_marginal(self, observations, function_dist, *args, **kwargs):
        self._check_labels(observations)
        lp = self.forward(self._samples(function_dist)).log_prob(observations.long())
        return torch.logsumexp(lp, 0) - torch.log(torch.tensor(float(lp.shape[0]), dtype=lp.dtype))
