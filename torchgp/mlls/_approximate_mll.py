r"""Base of the variational objectives: likelihood term (per minibatch) − KL / N + log prior / N.

.. math:: \frac1N\mathcal L = \frac1b \sum_{i\in\text{batch}} \ell_i(y_i, q(f_i))
          - \frac{\beta}{N}\,\mathrm{KL}(q(u)\,\|\,p(u)) + \frac1N\log p(\theta) - \sum_j a_j

(Hensman et al. 2013, eq. 4; Hensman et al. 2015, eq. 17), an unbiased minibatch estimate of the
bound divided by the number of data points ``N`` (GPyTorch's normalisation); :math:`a_j` are the
model's added loss terms (:class:`~torchgp.mlls.AddedLossTerm`), already per datum. Under
``settings.observation_nan_policy('mask')`` / ``'fill'`` the sum runs over the observed targets
(a point missing in any batch member is left out of all, as in GPyTorch; ``b`` still counts it);
under the default 'ignore' a NaN/inf target raises an :class:`~torchgp.errors.InputError` naming its rows.
"""

from __future__ import annotations

import torch

from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError, ModelTypeError, ShapeError
from torchgp.likelihoods.softmax import SoftmaxLikelihood
from torchgp.mlls.marginal_log_likelihood import MarginalLogLikelihood
from torchgp.models._diagnostics import warn_eval_mode_objective
from torchgp.models.missing_data import masking_on, observed_points
from torchgp.models.validation import nonfinite_rows


class _ApproximateMarginalLogLikelihood(MarginalLogLikelihood):
    """Shared machinery of VariationalELBO, PredictiveLogLikelihood, GammaRobustVariationalELBO.

    Args:
        likelihood: the likelihood ``p(y | f)``.
        model: an :class:`~torchgp.models.ApproximateGP`.
        num_data: ``N``, the number of training points (not the minibatch size).
        beta: weight of the KL term (``beta < 1`` downweights the prior; β-VAE style).
        combine_terms: return the sum (default) or the tuple ``(log_lik, kl, log_prior)``, with
            ``added_loss`` appended when the model has added loss terms.
    """

    def __init__(self, likelihood, model, num_data: int, beta: float = 1.0, combine_terms: bool = True):
        super().__init__(likelihood, model)
        if not hasattr(model, "variational_strategy"):
            raise ModelTypeError(
                f"{type(self).__name__} needs an ApproximateGP (a model with a variational_strategy); got "
                f"{type(model).__name__}. For an ExactGP use ExactMarginalLogLikelihood."
            )
        if isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < 1:
            if torch.is_tensor(num_data) and num_data.numel() == 1 and int(num_data) >= 1:
                num_data = int(num_data)
            else:
                raise InputError(
                    f"num_data must be the number of training points N (a positive int); got {num_data!r}. "
                    "Pass train_y.size(0), not the minibatch size."
                )
        self.num_data = num_data
        self.beta = beta
        self.combine_terms = combine_terms

    def _log_likelihood_term(self, approximate_dist_f, target, **kwargs) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, approximate_dist_f: MultivariateNormal, target: torch.Tensor, **kwargs):
        """Objective to maximise, ``(*batch)``, for ``q(f)`` ``(*batch, b)`` and ``target (*batch, b)``."""
        if not isinstance(approximate_dist_f, MultivariateNormal):
            raise ModelTypeError(
                f"{type(self).__name__} expects the model's output q(f) (a MultivariateNormal); got "
                f"{type(approximate_dist_f).__name__}. Call mll(model(x), y), not mll(likelihood(model(x)), y)."
            )
        warn_eval_mode_objective(self, stacklevel=5)  # eval mode: frozen caches, dropout off: not the ELBO
        event = approximate_dist_f.event_shape
        b = event[0]
        labels = isinstance(self.likelihood, SoftmaxLikelihood)  # t latent functions, one class label per point
        if len(event) == 2 and labels:
            if target.shape[-1] != b:
                raise ShapeError(
                    f"target has shape {tuple(target.shape)} but the model output is over b = {b} points; a "
                    f"SoftmaxLikelihood takes one class label per point: pass labels of shape ({b},)."
                )
        elif len(event) == 2:  # a multitask q(f) over (b, t): targets (*batch, b, t)
            if tuple(target.shape[-2:]) != tuple(event):
                raise ShapeError(
                    f"target has shape {tuple(target.shape)} but the model output is over b = {b} points and "
                    f"t = {event[1]} tasks; pass the minibatch targets y of shape ({b}, {event[1]})."
                )
        elif target.shape[-1] != b and not (target.dim() >= 2 and target.shape[-1] == 1 and target.shape[-2] == b):
            raise ShapeError(
                f"target has shape {tuple(target.shape)} but the model output is over b = {b} points; pass the "
                f"minibatch targets y of shape ({b},) that match model(x)."
            )
        if len(event) == 1 and target.dim() >= 2 and target.shape[-1] == 1 and target.shape[-2] == b:
            target = target.squeeze(-1)
        if b > self.num_data:
            raise InputError(
                f"The minibatch has {b} points but num_data = {self.num_data}; num_data must be the total number "
                "of training points (train_y.size(0))."
            )
        masking = masking_on(self.likelihood)
        if len(event) == 1 and masking and torch.isnan(target).any():  # NaN targets are missing observations
            approximate_dist_f, target = observed_points(approximate_dist_f, target)
        elif not masking and not bool(torch.isfinite(target).all()):  # one reduction and one sync per call
            raise InputError(_nonfinite_minibatch_message(target, -2 if len(event) == 2 and not labels else -1))
        log_lik = self._log_likelihood_term(approximate_dist_f, target, **kwargs).div(b)  # b counts missing ones
        kl = self.model.variational_strategy.kl_divergence().div(self.num_data / self.beta)
        log_prior = self._log_prior()
        if torch.is_tensor(log_prior):
            log_prior = log_prior / self.num_data
        else:
            log_prior = torch.zeros_like(kl) + log_prior / self.num_data
        # GPyTorch's convention: added loss terms are per datum already and are subtracted.
        terms = list(self.model.added_loss_terms()) if hasattr(self.model, "added_loss_terms") else []
        added_loss = torch.zeros_like(log_lik)
        for term in terms:
            added_loss = added_loss + term.loss()
        if self.combine_terms:
            return log_lik - kl + log_prior - added_loss
        if terms:
            return log_lik, kl, log_prior, added_loss
        return log_lik, kl, log_prior


def _nonfinite_minibatch_message(target: torch.Tensor, point_dim: int) -> str:
    """The error for NaN/inf targets in a minibatch under ``observation_nan_policy('ignore')``, naming the rows."""
    rows = nonfinite_rows(target, point_dim)
    return (
        f"The minibatch targets hold NaN or inf at {len(rows)} row(s) of the batch (first: {rows[:10]}): the "
        "objective would be NaN, and an optimiser step on it would make the parameters NaN (a later Cholesky "
        "failure would then blame them). Drop those rows from the data (keep = torch.isfinite(y); X, y = X[keep], "
        "y[keep]), or, if NaN marks a missing observation, train under "
        "`with torchgp.settings.observation_nan_policy('mask'):`."
    )
