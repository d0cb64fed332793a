r"""``_PyroMixin``: an approximate GP as the ``u`` and ``f`` sites of a Pyro model and guide.

The model samples the inducing values from their prior, ``u ~ p(u)``, and the guide from the variational
distribution, ``u ~ q(u)``, both under ``poutine.scale(beta)``, so a Pyro ELBO holds the term
``-β KL(q(u) ‖ p(u))`` (Hensman et al. 2015, eq. 6), estimated by Monte Carlo with ``Trace_ELBO`` or
exactly with ``TraceMeanField_ELBO``. Both return the per-point distribution of ``f(x)`` (``q(f(x))`` in
the guide, ``p(f(x))`` in the model) as a masked Pyro ``Normal``: the likelihood samples ``f`` from it
in a data plate, and its own density never enters the ELBO (the expected log-likelihood
``E_{q(f)}[log p(y | f)]`` does). Pyro is imported only when these methods run.
"""

from __future__ import annotations

import torch


def _per_point_normal(pyro_dist, function_dist):
    """``Normal(mean, stddev)`` of ``function_dist`` ``(*batch, n)`` with the batch as events, masked out."""
    normal = pyro_dist.Normal(loc=function_dist.mean, scale=function_dist.stddev)
    return normal.to_event(len(function_dist.event_shape) - 1).mask(False)


def _as_pyro_mvn(pyro_dist, mvn):
    """A torchgp ``MultivariateNormal`` ``(*batch, m)`` as Pyro's, its batch dims made event dims."""
    out = pyro_dist.MultivariateNormal(mvn.mean, scale_tril=mvn.scale_tril)
    return out.to_event(len(out.batch_shape))


class _PyroMixin:
    """``pyro_guide`` and ``pyro_model`` for a model with a ``variational_strategy`` (GPyTorch's names)."""

    def pyro_guide(self, input: torch.Tensor, beta: float = 1.0, name_prefix: str = ""):
        """Guide half: ``u ~ q(u)`` at site ``<name_prefix>.u``; returns the masked ``q(f(input))``.

        Args:
            input: ``(*batch, n, d)`` (or ``(n,)``).
            beta: weight of the KL term (``β < 1`` weakens the prior's pull, as in a β-VAE).
            name_prefix: prefix of the Pyro site names.

        Returns:
            a Pyro ``Normal`` of batch shape ``(n,)`` and event shape ``batch``, masked out of the ELBO.
        """
        from torchgp import _pyro

        with _pyro.pyro.poutine.scale(scale=beta):
            q_u = _as_pyro_mvn(_pyro.pyro_dist, self.variational_strategy.variational_distribution)
            _pyro.pyro.sample(name_prefix + ".u", q_u)
        return _per_point_normal(_pyro.pyro_dist, self(input, prior=False))

    def pyro_model(self, input: torch.Tensor, beta: float = 1.0, name_prefix: str = ""):
        """Model half: ``u ~ p(u)`` at ``<name_prefix>.u``, the log prior of the hyperparameters and the added
        loss terms as factors; returns the masked prior ``p(f(input))``.

        Args:
            input: ``(*batch, n, d)`` (or ``(n,)``).
            beta: weight of the KL term.
            name_prefix: prefix of the Pyro site names.
        """
        from torchgp import _pyro

        pyro = _pyro.pyro
        with pyro.poutine.scale(scale=beta):
            p_u = _as_pyro_mvn(_pyro.pyro_dist, self.variational_strategy.prior_distribution)
            u = pyro.sample(name_prefix + ".u", p_u)
        log_prior = torch.zeros((), dtype=u.dtype, device=u.device)
        for _, module, prior, closure, _ in self.named_priors():
            log_prior = log_prior + prior.log_prob(closure(module)).sum()
        pyro.factor(name_prefix + ".log_prior", log_prior)
        added_loss = torch.zeros((), dtype=u.dtype, device=u.device)
        for term in self.added_loss_terms():
            added_loss = added_loss + term.loss()
        pyro.factor(name_prefix + ".added_loss", added_loss)
        return _per_point_normal(_pyro.pyro_dist, self(input, prior=True))
