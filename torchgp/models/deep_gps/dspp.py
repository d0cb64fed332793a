r"""Deep sigma point processes (DSPP; Jankowiak, Pleiss & Gardner 2020).

A DSPP replaces the deep GP's Monte Carlo samples by ``Q`` learned quadrature sites ``ξ_q``: layer
``ℓ`` is evaluated at the ``Q`` deterministic inputs

.. math:: x^{(\ell)}_q = \mu^{(\ell-1)}_q + \sigma^{(\ell-1)}_q \odot \xi^{(\ell)}_q,\qquad q = 1, \dots, Q

(Jankowiak et al. 2020, §4, eq. 10), one per copy ``q`` of the previous layer's marginals, and the
model's predictive is the mixture ``p(y | x) = Σ_q ω_q N(y | μ_q(x), σ_q²(x) + σ_ε²)`` with learned
weights ``log ω = w - logsumexp(w)`` (``raw_quad_weights``). The objective is the mixture's
predictive log-likelihood (:class:`~torchgp.mlls.DeepPredictiveLogLikelihood`).
"""

from __future__ import annotations

import torch

from torchgp.distributions import MultitaskMultivariateNormal
from torchgp.errors import InputError
from torchgp.models.deep_gps.deep_gp import DeepGP, DeepGPLayer, _expand_samples

__all__ = ["DSPPLayer", "DSPP"]


def _check_num_sites(num_quad_sites) -> int:
    if isinstance(num_quad_sites, bool) or not isinstance(num_quad_sites, int) or num_quad_sites < 1:
        raise InputError(
            f"num_quad_sites must be a positive int (the number Q of quadrature sites); got {num_quad_sites!r}."
        )
    return num_quad_sites


class DSPPLayer(DeepGPLayer):
    """A DSPP layer: a :class:`DeepGPLayer` evaluated at ``Q`` quadrature sites (GPyTorch's interface).

    Args:
        variational_strategy: the strategy of the layer's GPs (``batch_shape = (output_dims,)``).
        input_dims: ``d``, the number of input features.
        output_dims: ``h``, the number of GPs, or ``None`` for one GP (a ``MultivariateNormal`` output).
        num_quad_sites: ``Q``, the number of quadrature sites (the mixture's number of components).
        quad_sites: the sites ``ξ`` ``(Q, d)``; by default a learned parameter drawn from ``N(0, 1)``.

    Shapes:
        ``layer(x (*batch, n, d))`` → multitask batch ``(Q, *batch)``, event ``(n, h)`` (``Q`` copies);
        ``layer(previous layer's output (Q, *batch, n, d))`` → batch ``(Q, *batch)``, event ``(n, h)``,
        component ``q`` at inputs ``μ_q + σ_q ⊙ ξ_q``.
    """

    def __init__(self, variational_strategy, input_dims, output_dims, num_quad_sites=3, quad_sites=None):
        super().__init__(variational_strategy, input_dims, output_dims)
        self.num_quad_sites = _check_num_sites(num_quad_sites)
        if quad_sites is None:
            quad_sites = torch.nn.Parameter(torch.randn(num_quad_sites, input_dims))
        self.quad_sites = quad_sites

    def __call__(self, inputs, **kwargs):
        """The layer's marginals at the quadrature inputs; see the class docstring for shapes."""
        deterministic_inputs = not isinstance(inputs, MultitaskMultivariateNormal)
        if not deterministic_inputs:
            mu, sigma = inputs.mean, inputs.variance.sqrt()  # (Q, *batch, n, d)
            if mu.shape[0] != self.num_quad_sites:
                raise InputError(
                    f"{type(self).__name__} has Q = {self.num_quad_sites} quadrature sites but its input has "
                    f"{mu.shape[0]} components (batch shape {tuple(inputs.batch_shape)}); build every layer with "
                    "the DSPP's num_quad_sites."
                )
            # Jankowiak et al. 2020, eq. 10: x_q = μ_q + σ_q ⊙ ξ_q, site q paired with component q
            xi = self.quad_sites.view(self.num_quad_sites, *([1] * (mu.dim() - 2)), self.input_dims)
            inputs = mu + sigma * xi.to(mu)
        output = self._marginals(inputs, **kwargs)
        if deterministic_inputs:
            output = _expand_samples(output, self.num_quad_sites)
        return output


class DSPP(DeepGP):
    """A container of :class:`DSPPLayer` modules with the mixture weights (GPyTorch's interface).

    Args:
        num_quad_sites: ``Q``, the number of quadrature sites of every layer.

    Attributes:
        raw_quad_weights: ``w`` ``(Q,)``; ``quad_weights = w - logsumexp(w)`` are the log mixture weights.

    Shapes:
        ``model(x (*batch, n, d))`` → the last layer's output, batch ``(Q, *batch)``.
    """

    def __init__(self, num_quad_sites):
        super().__init__()
        self.num_quad_sites = _check_num_sites(num_quad_sites)
        self.register_parameter("raw_quad_weights", torch.nn.Parameter(torch.randn(self.num_quad_sites)))

    @property
    def quad_weights(self) -> torch.Tensor:
        """``log ω = w - logsumexp(w)`` ``(Q,)``: the log weights of the mixture (they sum to one)."""
        w = self.raw_quad_weights
        return w - w.logsumexp(dim=-1)
