r"""The ``Likelihood`` base: ``p(y | f)`` and what inference needs from it.

* ``likelihood(f_samples: Tensor)`` → ``forward(f)``: the conditional ``p(y | f)`` as a
  ``torch.distributions`` object, batched over f.
* ``likelihood(dist: MultivariateNormal)`` → ``marginal(dist)``: GPyTorch's predictive. Without a
  closed form it is ``forward(f_s)`` at ``S = settings.num_likelihood_samples`` draws
  ``f_s ~ q(f)``: the likelihood's own distribution with batch shape ``(S, *batch, n)``, whose
  average over the first dimension is the predictive ``p(y*) ≈ (1/S) Σ_s p(y* | f_s)``
  (Gaussian and Bernoulli likelihoods return their closed forms instead).
* ``expected_log_prob(y, q(f))`` = ``E_q[log p(y | f)]`` per data point and
  ``log_marginal(y, q(f))`` = ``log E_q[p(y | f)]``, used by the variational ELBO and the
  predictive log-likelihood.

Subclasses write only ``forward(f)``. The defaults of :class:`Likelihood` take ``p(y | f)`` to
factorise over the entries of ``f`` (so the per-point marginals of ``q(f)`` suffice) and integrate by
Gauss–Hermite quadrature; :class:`_OneDimensionalLikelihood` is GPyTorch's name for that case. A
likelihood over several latent functions per point (``SoftmaxLikelihood``) overrides them.
"""

from __future__ import annotations

import math

import torch

from torchgp import settings
from torchgp.distributions import MultivariateNormal
from torchgp.likelihoods.quadrature import GaussHermiteQuadrature1D
from torchgp.module import Module


class Likelihood(Module):
    """Base likelihood.

    Args:
        max_plate_nesting: (Pyro only) how many batch dimensions the function values have, so that
            Pyro's plates over particles sit to their left (GPyTorch's argument).
        batch_shape: batch of independent likelihoods.
    """

    is_gaussian = False

    def __init__(self, max_plate_nesting: int = 1, batch_shape: torch.Size = torch.Size(), **kwargs):
        super().__init__()
        self.max_plate_nesting = int(max_plate_nesting)
        self.batch_shape = torch.Size(batch_shape)
        self.quadrature = GaussHermiteQuadrature1D()

    # ------------------------------------------------------------------ Pyro (torchgp.models.PyroGP)
    @property
    def num_data(self) -> int | None:
        """(Pyro only) ``N``, the number of training points; the observed site is scaled by ``N / b``."""
        return self.__dict__.get("_num_data")

    @num_data.setter
    def num_data(self, value: int) -> None:
        self.__dict__["_num_data"] = int(value)

    @property
    def name_prefix(self) -> str:
        """(Pyro only) prefix of this likelihood's Pyro sites (``<prefix>.f``, ``<prefix>.y``)."""
        return self.__dict__.get("_name_prefix", "")

    @name_prefix.setter
    def name_prefix(self, value: str) -> None:
        self.__dict__["_name_prefix"] = str(value)

    def pyro_guide(self, function_dist, target: torch.Tensor, *args, **kwargs) -> None:
        """(Pyro only) guide half: ``f ~ q(f)`` at ``<prefix>.f`` in the data plate (dimension -1).

        Override (calling this) if the likelihood has latent variables of its own to infer.

        Args:
            function_dist: the per-point ``q(f)`` from :meth:`~torchgp.models.pyro._PyroMixin.pyro_guide`,
                batch shape ``(b,)``.
            target: ``y`` ``(*batch, b)``.
        """
        from torchgp import _pyro

        with _pyro.pyro.plate(self.name_prefix + ".data_plate", dim=-1):
            _pyro.pyro.sample(self.name_prefix + ".f", function_dist)

    def pyro_model(self, function_dist, target: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """(Pyro only) model half: ``f`` at ``<prefix>.f``, then ``y ~ p(y | f)`` observed at ``<prefix>.y``.

        Args:
            function_dist: the per-point ``p(f)`` from :meth:`~torchgp.models.pyro._PyroMixin.pyro_model`.
            target: ``y`` ``(*batch, b)``; further arguments go to :meth:`forward`.

        Returns:
            ``target`` (the observed site's value).
        """
        from torchgp import _pyro

        with _pyro.pyro.plate(self.name_prefix + ".data_plate", dim=-1):
            function_samples = _pyro.pyro.sample(self.name_prefix + ".f", function_dist)
            output_dist = self(function_samples, *args, **kwargs)
            return self.sample_target(output_dist, target)

    def sample_target(self, output_dist, target: torch.Tensor) -> torch.Tensor:
        """(Pyro only) observe ``target`` under ``output_dist`` at ``<prefix>.y``, scaled by ``N / b``.

        ``b = output_dist.batch_shape[-1]`` is the minibatch size; without ``num_data`` the scale is 1.
        """
        from torchgp import _pyro

        b = output_dist.batch_shape[-1]
        with _pyro.pyro.poutine.scale(scale=(self.num_data or b) / b):
            return _pyro.pyro.sample(self.name_prefix + ".y", output_dist, obs=target)

    def forward(self, function_samples: torch.Tensor, *args, **kwargs) -> torch.distributions.Distribution:
        """``p(y | f)`` for function values ``f (*samples, *batch, n)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(f) returning p(y | f).")

    def __call__(self, input, *args, **kwargs):
        if isinstance(input, MultivariateNormal):
            return self.marginal(input, *args, **kwargs)
        if isinstance(input, torch.Tensor):
            return self.forward(input, *args, **kwargs)
        raise TypeError(
            f"{type(self).__name__} takes a MultivariateNormal (predictive) or a tensor of function "
            f"values (conditional); got {type(input).__name__}."
        )

    def _draw_function_samples(self, function_dist: MultivariateNormal, num: int | None = None) -> torch.Tensor:
        """``f_s ~ q(f)`` ``(S, *batch, n)`` from the per-point marginals (all a factorised likelihood needs)."""
        num = settings.num_likelihood_samples.value() if num is None else num
        mean, std = function_dist.mean, function_dist.stddev
        eps = torch.randn(num, *mean.shape, dtype=mean.dtype, device=mean.device)
        return mean + std * eps

    def expected_log_prob(self, observations: torch.Tensor, function_dist: MultivariateNormal, *args, **kwargs):
        """``E_{q(f)}[log p(y | f)]`` per point, ``(*batch, n)``, by Gauss–Hermite quadrature."""
        return self.quadrature(lambda f: self.forward(f, *args, **kwargs).log_prob(observations), function_dist)

    def log_marginal(self, observations: torch.Tensor, function_dist: MultivariateNormal, *args, **kwargs):
        r"""``log ∫ p(y | f) q(f) df`` per point, ``(*batch, n)``, by quadrature in log space.

        .. math:: \log \sum_k w_k\, p(y \mid \mu + \sqrt2\,\sigma t_k)
                  = \operatorname{logsumexp}_k\big(\log w_k + \log p(y \mid f_k)\big)
        """
        t, w = self.quadrature.locations_weights(function_dist.mean.dtype, function_dist.mean.device)
        mean, std = function_dist.mean, function_dist.stddev
        f = mean + math.sqrt(2.0) * std * t.view((-1,) + (1,) * mean.dim())
        lp = self.forward(f, *args, **kwargs).log_prob(observations)
        return torch.logsumexp(lp + w.log().view((-1,) + (1,) * (lp.dim() - 1)), 0)

    def marginal(self, function_dist: MultivariateNormal, *args, **kwargs) -> torch.distributions.Distribution:
        """``p(y | f_s)`` at ``S = settings.num_likelihood_samples`` draws ``f_s ~ q(f)``: batch ``(S, *batch, n)``.

        As GPyTorch: the likelihood's own distribution over the samples; ``.mean.mean(0)`` is the
        predictive mean, ``.variance.mean(0) + .mean.var(0)`` the predictive variance. The draws come
        from the per-point marginals of ``q(f)`` (exact for each point's predictive; to draw jointly
        correlated outputs, sample ``f`` from ``q`` and call ``likelihood(f)``).
        """
        return self.forward(self._draw_function_samples(function_dist), *args, **kwargs)


class _OneDimensionalLikelihood(Likelihood):
    r"""A likelihood of one latent value per point: ``p(y | f) = ∏_i p(y_i | f_i)`` (GPyTorch's base class).

    Subclass it and write ``forward(f)`` returning the distribution of ``y`` given ``f (*samples, *batch, n)``.
    ``expected_log_prob`` and ``log_marginal`` then integrate over the one-dimensional marginals
    ``q(f_i) = N(μ_i, σ_i²)`` by Gauss–Hermite quadrature with ``settings.num_gauss_hermite_locs`` nodes:

    .. math:: \mathbb E_{q(f_i)}[g(f_i)] \approx \sum_k w_k\, g(\mu_i + \sqrt2\,\sigma_i t_k),

    and ``likelihood(q(f))`` returns ``forward`` at ``settings.num_likelihood_samples`` draws of ``f``.

    Example:
        >>> import torch, torchgp
        >>> class Exponential(torchgp.likelihoods._OneDimensionalLikelihood):
        ...     def forward(self, f):
        ...         return torch.distributions.Exponential(rate=torch.exp(-f))
        >>> q = torchgp.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3))
        >>> Exponential().expected_log_prob(torch.ones(3), q).shape
        torch.Size([3])
    """

    def expected_log_prob(self, observations: torch.Tensor, function_dist: MultivariateNormal, *args, **kwargs):
        """``Σ_k w_k log p(y | μ + √2 σ t_k)`` per point, ``(*batch, n)``."""
        return self.quadrature(lambda f: self.forward(f, *args, **kwargs).log_prob(observations), function_dist)

    def log_marginal(self, observations: torch.Tensor, function_dist: MultivariateNormal, *args, **kwargs):
        """``log Σ_k w_k p(y | μ + √2 σ t_k)`` per point, ``(*batch, n)`` (computed in log space)."""
        return Likelihood.log_marginal(self, observations, function_dist, *args, **kwargs)
