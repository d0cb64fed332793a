r"""``Delta(v)``: all probability on one point (GPyTorch's name; the distribution of a
:class:`~torchgp.variational.DeltaVariationalDistribution`).

.. math:: \log p(x) = \log \mathbb 1[x = v] + \text{log\_density}

summed over the ``event_dim`` rightmost dimensions, so ``0`` at ``v`` and ``-inf`` elsewhere
(plus an optional ``log_density`` that keeps the family closed under differentiable maps).
"""

from __future__ import annotations

import numbers

import torch
from torch.distributions import Distribution, constraints, register_kl

from torchgp.distributions.multivariate_normal import MultivariateNormal
from torchgp.errors import ShapeError


class Delta(Distribution):
    """Point mass at ``v``.

    Args:
        v: the support point, ``(*batch, *event)``.
        log_density: ``(*batch)`` or a number added to ``log_prob`` (default 0).
        event_dim: how many rightmost dimensions of ``v`` form one event (default 0).
        validate_args: check ``log_density``'s shape.

    Shapes:
        ``batch_shape = v.shape[:v.dim() - event_dim]``, ``event_shape`` the rest; ``sample(s)``
        ``(*s, *v.shape)``; ``log_prob(x)`` ``(*batch)``.

    Example:
        >>> import torch
        >>> from torchgp.distributions import Delta
        >>> Delta(torch.tensor([1.0, 2.0])).log_prob(torch.tensor([1.0, 3.0]))
        tensor([0., -inf])
    """

    arg_constraints = {"v": constraints.real, "log_density": constraints.real}
    support = constraints.real
    has_rsample = True

    def __init__(self, v: torch.Tensor, log_density=0.0, event_dim: int = 0, validate_args=None):
        v = torch.as_tensor(v)
        if not 0 <= event_dim <= v.dim():
            raise ShapeError(f"Delta: event_dim must be in [0, v.dim() = {v.dim()}]; got {event_dim}.")
        batch_shape = v.shape[: v.dim() - event_dim]
        event_shape = v.shape[v.dim() - event_dim :]
        if isinstance(log_density, numbers.Number):
            log_density = torch.full(batch_shape, float(log_density), dtype=v.dtype, device=v.device)
        elif validate_args and log_density.shape != batch_shape:
            raise ShapeError(
                f"Delta: log_density must have the batch shape {tuple(batch_shape)}; got {tuple(log_density.shape)}."
            )
        self.v = v
        self.log_density = log_density
        super().__init__(batch_shape, event_shape, validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.v

    @property
    def mode(self) -> torch.Tensor:
        return self.v

    @property
    def variance(self) -> torch.Tensor:
        return torch.zeros_like(self.v)

    def expand(self, batch_shape, _instance=None) -> Delta:
        batch_shape = torch.Size(batch_shape)
        v = self.v.expand(batch_shape + self.event_shape)
        return Delta(v, self.log_density.expand(batch_shape), event_dim=len(self.event_shape))

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """``v`` repeated: ``(*sample_shape, *batch, *event)`` (differentiable in ``v``)."""
        return self.v.expand(torch.Size(sample_shape) + self.v.shape)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``0`` where ``x == v`` (all event entries), ``-inf`` elsewhere, plus ``log_density``; ``(*batch)``."""
        v = self.v.expand(self.batch_shape + self.event_shape)
        lp = (x == v).to(x.dtype if x.is_floating_point() else v.dtype).log()
        if len(self.event_shape):
            lp = lp.sum(tuple(range(-len(self.event_shape), 0)))
        return lp + self.log_density


@register_kl(Delta, MultivariateNormal)
def _kl_delta_mvn(p: Delta, q: MultivariateNormal) -> torch.Tensor:
    """``KL(δ_v ‖ q) = -log q(v)`` (the entropy of a point mass taken as 0)."""
    return -q.log_prob(p.v)
