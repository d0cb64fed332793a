r"""The variational ELBO (Hensman et al. 2013, eq. 4; 2015, eq. 17).

.. math:: \mathcal L = \sum_{i=1}^N \mathbb E_{q(f_i)}[\log p(y_i \mid f_i)] - \beta\,\mathrm{KL}(q(u)\,\|\,p(u))

returned divided by ``N`` and estimated on a minibatch.
"""

from __future__ import annotations

from torchgp.mlls._approximate_mll import _ApproximateMarginalLogLikelihood


class VariationalELBO(_ApproximateMarginalLogLikelihood):
    """ELBO for :class:`~torchgp.models.ApproximateGP` (GPyTorch's interface).

    Args:
        likelihood: any likelihood with ``expected_log_prob`` (closed form for Gaussian, quadrature otherwise).
        model: the ApproximateGP.
        num_data: ``N``, the total number of training points.
        beta: KL weight (1 is the true ELBO).
        combine_terms: return the sum, or ``(log_lik, kl, log_prior)``.

    Shapes:
        ``mll(model(x) (*batch, b), y (*batch, b))`` → ``(*batch)``.

    Example:
        ``loss = -mll(model(x_batch), y_batch); loss.backward()``
    """

    def _log_likelihood_term(self, approximate_dist_f, target, **kwargs):
        return self.likelihood.expected_log_prob(target, approximate_dist_f, **kwargs).sum(-1)
