r"""The deep GP bound (Salimbeni & Deisenroth 2017, eq. 12): a variational objective averaged over samples.

.. math:: \frac1N\mathcal L = \frac1S\sum_{s=1}^S \Big[\frac1b\sum_{i} \ell_i\big(y_i, q(f^{(L)}_{s,i})\big)\Big]
          - \frac{\beta}{N}\sum_\ell \mathrm{KL}\big(q(U^{(\ell)})\,\|\,p(U^{(\ell)})\big) + \dots

where ``ℓ_i`` is the base objective's per-point term (the expected log-likelihood for the ELBO)
and the KL and added terms do not depend on the sample, so the average leaves them unchanged.
"""

from __future__ import annotations

from torchgp.errors import InputError
from torchgp.mlls._approximate_mll import _ApproximateMarginalLogLikelihood


class DeepApproximateMLL(_ApproximateMarginalLogLikelihood):
    """A variational objective for deep GPs: the base objective's mean over the samples (GPyTorch's interface).

    Args:
        base_mll: e.g. ``VariationalELBO(likelihood, model, num_data)`` on a
            :class:`~torchgp.models.deep_gps.DeepGP`; it must combine its terms.

    Shapes:
        ``mll(model(x) (S, *batch, b), y (*batch, b))`` → ``(*batch)``.

    Example:
        ``mll = DeepApproximateMLL(VariationalELBO(model.likelihood, model, num_data=N)); loss = -mll(model(x), y)``
    """

    def __init__(self, base_mll):
        if not isinstance(base_mll, _ApproximateMarginalLogLikelihood):
            raise InputError(
                f"DeepApproximateMLL wraps a variational objective (VariationalELBO, PredictiveLogLikelihood, ...); "
                f"got {type(base_mll).__name__}."
            )
        if not base_mll.combine_terms:
            raise InputError(
                "DeepApproximateMLL averages the base objective over samples, which needs its terms combined; "
                "build the base objective with combine_terms=True."
            )
        super().__init__(base_mll.likelihood, base_mll.model, num_data=base_mll.num_data, beta=base_mll.beta)
        self.base_mll = base_mll

    def _log_likelihood_term(self, approximate_dist_f, target, **kwargs):
        """The base objective's likelihood term averaged over the sample dimension (dim 0), ``(*batch)``."""
        return self.base_mll._log_likelihood_term(approximate_dist_f, target, **kwargs).mean(0)

    def forward(self, approximate_dist_f, target, **kwargs):
        """``(1/S) Σ_s base_mll(q(f_s), y)``, ``(*batch)``."""
        return self.base_mll.forward(approximate_dist_f, target, **kwargs).mean(0)
