r"""Predictive log-likelihood objective (Jankowiak, Pleiss & Gardner 2020, "PPGPR").

.. math:: \mathcal L = \sum_{i=1}^N \log \mathbb E_{q(f_i)}[p(y_i \mid f_i)] - \beta\,\mathrm{KL}(q(u)\,\|\,p(u))

returned divided by ``N``. The log sits outside the expectation, so predictive variances are
calibrated for the predictive distribution rather than for the latent function.
"""

from __future__ import annotations

from torchgp.mlls._approximate_mll import _ApproximateMarginalLogLikelihood


class PredictiveLogLikelihood(_ApproximateMarginalLogLikelihood):
    """Same arguments and shapes as :class:`~torchgp.mlls.VariationalELBO`."""

    def _log_likelihood_term(self, approximate_dist_f, target, **kwargs):
        return self.likelihood.log_marginal(target, approximate_dist_f, **kwargs).sum(-1)
