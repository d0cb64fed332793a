r"""Missing training targets (NaN) under ``settings.observation_nan_policy`` 'mask' / 'fill'.

(The variational objectives, whose terms are pointwise, drop the points missing in any batch
member instead: :func:`observed_points`.)

A NaN target at row :math:`i` of batch member :math:`b` is left out of that member's Gaussian.
Rather than slicing a different subset per batch member (ragged shapes), the rows and columns of
the missing points are cut out of the covariance and replaced by the identity,

.. math:: \tilde C = (o\,o^\top) \circ C + \operatorname{diag}(1 - o),\qquad
          \tilde r = o \circ (y - \mu),

with :math:`o` the 0/1 observed mask. :math:`\tilde C` is block diagonal (observed block
:math:`C_{oo}`, identity on the missing rows), so
:math:`\tilde r^\top \tilde C^{-1}\tilde r = r_o^\top C_{oo}^{-1} r_o`,
:math:`\log|\tilde C| = \log|C_{oo}|`, and every missing row adds only :math:`-\tfrac12\log 2\pi`
to the log density, which is taken back: the result equals :math:`\log N(y_o; \mu_o, C_{oo})`
exactly, batch member by batch member, gradients included. The posterior conditions on the same
block: :math:`\tilde\alpha = \tilde C^{-1}\tilde r` is zero on the missing rows and the missing
columns of :math:`K_{*x}` are zeroed, so they carry no information (R&W 2006, Alg. 2.1 on the
observed subset).
"""

from __future__ import annotations

import math

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError
from torchgp.linalg.operators import DenseOperator
from torchgp.models.posterior import ExactPosterior


def masking_on(likelihood=None) -> bool:
    """Whether NaN targets are missing observations: policy 'mask'/'fill', or a likelihood that says so."""
    return settings.observation_nan_policy.value() != "ignore" or getattr(likelihood, "_masks_missing", False)


def decouple_missing(covar, observed: torch.Tensor) -> torch.Tensor:
    r"""``(o oᵀ) ∘ C + diag(1 - o)``, dense ``(*batch, n, n)``, for ``observed`` ``(*batch, n)`` (bool)."""
    C = covar.to_dense() if not torch.is_tensor(covar) else covar
    o = observed.to(C.dtype)
    return C * (o.unsqueeze(-1) * o.unsqueeze(-2)) + torch.diag_embed(1 - o)


def masked_log_prob(dist: MultivariateNormal, target: torch.Tensor) -> torch.Tensor:
    r"""``log N(y_o; μ_o, C_oo)`` of the observed (non-NaN) entries of ``target``, per batch member.

    Args:
        dist: ``N(μ, C)``, ``(*batch, n)`` (for the MLL: the marginal with the noise added), or a
            multitask normal ``(*batch, n, t)``, whose entries are masked one by one.
        target: ``(*batch, n)`` (multitask: ``(*batch, n, t)``) holding NaN at the missing points;
            broadcast against ``dist``.

    Returns:
        ``(*batch)``; a member with no observed point gets 0.
    """
    observed = ~torch.isnan(target)
    if bool(observed.all()):
        return dist.log_prob(target)
    if len(dist.event_shape) == 2:  # multitask: one Gaussian over the nt entries, in the covariance's row order
        interleaved = getattr(dist, "_interleaved", True)
        flat = dist.mean.reshape(*dist.mean.shape[:-2], -1) if interleaved else dist.mean.mT.flatten(-2)
        target = target.reshape(*target.shape[:-2], -1) if interleaved else target.mT.flatten(-2)
        return masked_log_prob(MultivariateNormal(flat, dist.lazy_covariance_matrix), target)
    batch = broadcast_shapes(dist.batch_shape, target.shape[:-1])
    n = target.shape[-1]
    observed = observed.expand(*batch, n)
    mean = dist.mean.expand(*batch, n)
    r = torch.where(observed, torch.where(observed, target, 0.0).expand(*batch, n) - mean, 0.0)
    C = decouple_missing(dist.lazy_covariance_matrix, observed)
    log_prob = MultivariateNormal(torch.zeros_like(r), DenseOperator(C)).log_prob(r)
    # each decoupled row contributed -½ log 2π (unit variance, zero residual): take it back
    return log_prob + 0.5 * math.log(2 * math.pi) * (~observed).sum(-1).to(r.dtype)


def observed_points(dist: MultivariateNormal, target: torch.Tensor) -> tuple[MultivariateNormal, torch.Tensor]:
    """``dist`` and ``target`` restricted to the points observed in every batch member (GPyTorch's 'mask').

    For pointwise objectives (the variational ones), where a per-member subset cannot be sliced out
    of one tensor: a point missing in any batch member is left out of all of them.

    Shapes:
        ``dist (*batch, b)``, ``target (*batch, b)`` → ``(*batch, b_o)``, ``(*batch, b_o)``.
    """
    b = target.shape[-1]
    observed = settings.observation_nan_policy._get_observed(target, torch.Size([b]))
    C = dist.lazy_covariance_matrix.to_dense()
    sub = MultivariateNormal(dist.mean[..., observed], C[..., observed, :][..., observed])
    return sub, target[..., observed]


class MaskedExactPosterior(ExactPosterior):
    """:class:`ExactPosterior` conditioned on the observed (non-NaN) training targets only.

    Args:
        train_x: ``(*batch, n, d)``; train_y: ``(*batch, n)`` with NaN at missing points.
        prior_mean: ``(*batch, n)``; noisy_covar: ``K + σ²I`` ``(*batch, n, n)``.
    """

    def __init__(self, train_x, train_y, prior_mean, noisy_covar):
        batch = broadcast_shapes(train_y.shape[:-1], prior_mean.shape[:-1], noisy_covar.shape[:-2])
        n = train_y.shape[-1]
        self.observed = (~torch.isnan(train_y)).expand(*batch, n)
        mean = prior_mean.expand(*batch, n)
        y = torch.where(self.observed, train_y.expand(*batch, n), mean)  # residual 0 at the missing rows
        super().__init__(train_x, y, mean, DenseOperator(decouple_missing(noisy_covar, self.observed)))

    def detach(self) -> MaskedExactPosterior:
        new = object.__new__(MaskedExactPosterior)
        new.__dict__.update(super().detach().__dict__)
        return new

    def predict(self, test_mean, K_sx, test_covar):
        # the missing training points' columns of K(X*, X) carry nothing: zero them
        return super().predict(test_mean, K_sx * self.observed.unsqueeze(-2).to(K_sx.dtype), test_covar)


def exact_posterior(train_x, train_y, prior_mean, noisy_covar, likelihood=None) -> ExactPosterior:
    """The exact posterior, masking NaN targets as ``settings.observation_nan_policy`` says.

    Args:
        train_x: ``(*batch, n, d)``. train_y: ``(*batch, n)``, NaN at missing points.
        prior_mean: ``μ(X)`` ``(*batch, n)``. noisy_covar: ``K + σ²I`` ``(*batch, n, n)``.
        likelihood: the model's likelihood (one that masks missing points itself masks them here too).

    Raises:
        InputError: NaN targets under the default policy 'ignore'.
    """
    if not torch.isnan(train_y).any():
        return ExactPosterior(train_x, train_y, prior_mean, noisy_covar)
    if not masking_on(likelihood):
        raise InputError(nan_targets_message(train_y))
    return MaskedExactPosterior(train_x, train_y, prior_mean, noisy_covar)


def nan_targets_message(target: torch.Tensor) -> str:
    """The error for NaN targets under the policy 'ignore', naming the points."""
    bad = torch.isnan(target)
    rows = torch.nonzero(bad.reshape(-1, bad.shape[-1]).any(0)).flatten().tolist()
    return (
        f"train_targets holds NaN at {len(rows)} point(s) (first: {rows[:10]}). To treat them as missing "
        "observations, run under `with torchgp.settings.observation_nan_policy('mask'):`; otherwise drop or "
        "impute those points."
    )
