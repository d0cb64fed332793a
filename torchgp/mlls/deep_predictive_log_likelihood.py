r"""The DSPP objective: the predictive log-likelihood of a mixture (Jankowiak et al. 2020, eq. 12).

.. math:: \frac1N\mathcal L = \frac1b\sum_i \log \sum_{q=1}^Q \omega_q\, p(y_i \mid q_q(f_i))
          - \frac{\beta}{N}\sum_\ell \mathrm{KL}\big(q(U^{(\ell)})\,\|\,p(U^{(\ell)})\big) + \dots,

where ``p(y_i | q_q(f_i)) = ∫ p(y_i | f) q_q(f_i) df`` is the likelihood's ``log_marginal`` at
component ``q`` of the last layer's output and ``ω`` the model's mixture weights.
"""

from __future__ import annotations

from torchgp.errors import InputError, ModelTypeError
from torchgp.mlls._approximate_mll import _ApproximateMarginalLogLikelihood
from torchgp.models.deep_gps.dspp import DSPP


class DeepPredictiveLogLikelihood(_ApproximateMarginalLogLikelihood):
    """Predictive log-likelihood of a :class:`~torchgp.models.deep_gps.dspp.DSPP` (GPyTorch's interface).

    Args:
        likelihood: the likelihood ``p(y | f)`` (``log_marginal`` is used).
        model: the DSPP.
        num_data: ``N``, the number of training points.
        beta: KL weight.
        combine_terms: must be True (the terms are combined).

    Shapes:
        ``mll(model(x) (Q, *batch, b), y (*batch, b))`` → ``(*batch)``.
    """

    def __init__(self, likelihood, model, num_data, beta=1.0, combine_terms=True):
        if not combine_terms:
            raise InputError("DeepPredictiveLogLikelihood combines its terms; build it with combine_terms=True.")
        if not isinstance(model, DSPP):
            raise ModelTypeError(
                f"DeepPredictiveLogLikelihood needs a DSPP model (torchgp.models.deep_gps.dspp.DSPP); got "
                f"{type(model).__name__}. For a DeepGP use DeepApproximateMLL(PredictiveLogLikelihood(...))."
            )
        super().__init__(likelihood, model, num_data, beta, combine_terms)

    def _log_likelihood_term(self, approximate_dist_f, target, **kwargs):
        """``Σ_i logsumexp_q(log ω_q + log p(y_i | q_q(f_i)))``, ``(*batch)``."""
        log_marginal = self.likelihood.log_marginal(target, approximate_dist_f, **kwargs)  # (Q, *batch, b)
        w = self.model.quad_weights.view(-1, *([1] * (log_marginal.dim() - 1)))
        return (w + log_marginal).logsumexp(dim=0).sum(-1)
