r"""LKJ priors over correlation matrices (Lewandowski, Kurowicka & Joe 2009), GPyTorch's three classes.

For an ``n × n`` correlation matrix ``C = L Lᵀ`` the LKJ density is ``p(C) ∝ det(C)^{η-1}``. All three
classes evaluate ``torch.distributions.LKJCholesky(n, η)``'s log-density of the Cholesky factor ``L``
(which includes the Jacobian of ``C ↦ L``):

* :class:`LKJCholeskyFactorPrior` takes ``L`` itself;
* :class:`LKJPrior` takes ``C`` and evaluates the density of ``L = chol(C)``, as GPyTorch does;
* :class:`LKJCovariancePrior` takes a covariance ``Σ = D C D``, ``D = diag(σ)``, and adds the log-density
  of the standard deviations ``σ_i = √Σ_ii`` under ``sd_prior`` (the density of ``(C, σ)``).
"""

from __future__ import annotations

import torch
from torch import distributions as D

from torchgp.errors import InputError, ShapeError
from torchgp.priors.prior import Prior


class LKJCholeskyFactorPrior(Prior):
    """LKJ(η) prior over lower Cholesky factors ``L (*batch, n, n)`` of correlation matrices.

    Args:
        n: the matrix size (an int ≥ 2).
        eta: concentration ``η > 0`` (1: uniform over correlation matrices; larger: nearer ``I``),
            a number or a tensor of the prior's batch shape.
        validate_args: check the arguments (and the values passed to ``log_prob``).
        transform: optional map applied before ``log_prob``.

    Shapes:
        ``batch_shape = eta.shape``, ``event_shape = (n, n)``; ``log_prob(L (*batch, n, n))`` → ``(*batch)``.
    """

    _support = D.constraints.corr_cholesky

    def __init__(self, n, eta, validate_args=False, transform=None):
        n = int(n)
        if n < 2:
            raise InputError(f"{type(self).__name__}: n must be an integer ≥ 2; got {n}.")
        super().__init__(transform, validate_args, eta=eta)
        self.n = n

    def distribution(self):
        return D.LKJCholesky(self.n, self.eta, validate_args=self._validate_args)

    def _check_shape(self, X):
        if X.shape[-2:] != (self.n, self.n):
            raise ShapeError(
                f"{type(self).__name__} is over {self.n} × {self.n} matrices; got a value of shape {tuple(X.shape)}."
            )

    def log_prob(self, X):
        X = self.transform(X)
        self._check_shape(X)
        return self.distribution().log_prob(X)

    @property
    def support(self):
        return self._support

    @property
    def has_rsample(self):
        return False

    def _gpytorch_state(self, state_dict, prefix):
        state_dict.setdefault(prefix + "eta", self.eta)  # GPyTorch stores no buffers for LKJ priors


class LKJPrior(LKJCholeskyFactorPrior):
    """LKJ(η) prior over correlation matrices ``C (*batch, n, n)``; same arguments as :class:`LKJCholeskyFactorPrior`.

    ``log_prob(C)`` is the LKJCholesky log-density of ``chol(C)`` (GPyTorch's definition); ``sample``
    returns ``L Lᵀ``.

    Raises:
        InputError: ``C`` is not a correlation matrix (unit diagonal, positive definite).
    """

    _support = D.constraints.positive_definite

    def log_prob(self, X):
        X = self.transform(X)
        self._check_shape(X)
        diag = X.diagonal(dim1=-2, dim2=-1)
        L, info = torch.linalg.cholesky_ex(X)
        if bool((info != 0).any()) or not bool(((diag - 1).abs() < 1e-6).all()):
            raise InputError(
                f"{type(self).__name__}.log_prob needs correlation matrices (unit diagonal, positive definite); "
                f"got diagonal {diag.tolist() if diag.numel() < 10 else tuple(diag.shape)}. Normalise a covariance "
                "S by D⁻¹ S D⁻¹ with D = diag(√S_ii), or use LKJCovariancePrior."
            )
        return self.distribution().log_prob(L)

    def sample(self, sample_shape=torch.Size()):
        L = self.distribution().sample(torch.Size(sample_shape))
        return L @ L.mT

    @property
    def mean(self):
        return torch.eye(self.n, dtype=self.eta.dtype, device=self.eta.device).expand(*self.eta.shape, self.n, self.n)


class LKJCovariancePrior(LKJPrior):
    """Prior over covariance matrices ``Σ = D C D``: LKJ(η) on the correlations, ``sd_prior`` on each ``σ_i``.

    Args:
        n: the matrix size.
        eta: LKJ concentration, a number or a tensor of the batch shape.
        sd_prior: a prior over positive numbers, used for each of the ``n`` standard deviations
            (``event_shape`` ``()``, or ``(n,)`` for one prior per dimension); its batch shape must be eta's.
        validate_args: check the arguments.

    Shapes:
        ``log_prob(Σ (*batch, n, n))`` → ``(*batch)``: ``log p_LKJ(C) + Σ_i log p_sd(σ_i)``;
        ``sample(s)`` → ``(*s, *batch, n, n)`` with the ``n`` standard deviations drawn independently.
    """

    def __init__(self, n, eta, sd_prior, validate_args=False):
        if not isinstance(sd_prior, Prior):
            raise InputError(f"LKJCovariancePrior: sd_prior must be a torchgp prior; got {type(sd_prior).__name__}.")
        if isinstance(n, bool) or not isinstance(n, int):
            raise InputError(f"LKJCovariancePrior: n must be an int; got {n!r}.")
        super().__init__(n, eta, validate_args)
        sd_batch = sd_prior.batch_shape
        if sd_prior.event_shape not in (torch.Size([]), torch.Size([1]), torch.Size([n])):
            raise ShapeError(
                f"LKJCovariancePrior: sd_prior must have event_shape (), (1,) or ({n},); got "
                f"{tuple(sd_prior.event_shape)}."
            )
        if sd_batch != self.eta.shape:
            raise ShapeError(
                f"LKJCovariancePrior: sd_prior has batch_shape {tuple(sd_batch)} but eta has shape "
                f"{tuple(self.eta.shape)}; give them the same batch shape."
            )
        self.sd_prior = sd_prior

    @property
    def correlation_prior(self) -> LKJPrior:
        """The LKJ prior on the correlation matrix (GPyTorch's attribute)."""
        return LKJPrior(self.n, self.eta, validate_args=self._validate_args)

    def _sd_log_prob(self, sd):
        event = self.sd_prior.event_shape
        if event == torch.Size([self.n]):
            return self.sd_prior.log_prob(sd)
        if event == torch.Size([1]):
            return self.sd_prior.log_prob(sd.unsqueeze(-1)).sum(-1)
        return self.sd_prior.log_prob(sd.movedim(-1, 0)).sum(0)  # n independent scalar densities

    def log_prob(self, X):
        if X.shape[-2:] != (self.n, self.n):
            raise ShapeError(f"LKJCovariancePrior is over {self.n} × {self.n} matrices; got {tuple(X.shape)}.")
        var = X.diagonal(dim1=-2, dim2=-1)
        if not bool((var > 0).all()):
            raise InputError("LKJCovariancePrior.log_prob: the variances (diagonal) must be positive.")
        sd = var.sqrt()
        C = X / (sd.unsqueeze(-1) * sd.unsqueeze(-2))  # D⁻¹ Σ D⁻¹
        return super().log_prob(C) + self._sd_log_prob(sd)

    def _draw_sd(self, sample_shape):
        event = self.sd_prior.event_shape
        if event == torch.Size([self.n]):
            return self.sd_prior.rsample(sample_shape)
        draw = self.sd_prior.rsample(torch.Size([self.n]) + sample_shape)  # (n, *s, *batch[, 1])
        if event == torch.Size([1]):
            draw = draw.squeeze(-1)
        return draw.movedim(0, -1)

    def sample(self, sample_shape=torch.Size()):
        sample_shape = torch.Size(sample_shape)
        C = super().sample(sample_shape)
        sd = self._draw_sd(sample_shape)
        return sd.unsqueeze(-1) * C * sd.unsqueeze(-2)

    @property
    def mean(self):
        """``E[Σ] = diag(E[σ²])``: ``E[C] = I`` and the σ_i are independent of ``C``; ``(*batch, n, n)``."""
        m2 = self.sd_prior.variance + self.sd_prior.mean**2
        if self.sd_prior.event_shape != torch.Size([self.n]):
            m2 = m2.squeeze(-1) if self.sd_prior.event_shape == torch.Size([1]) else m2
            m2 = m2.unsqueeze(-1).expand(*m2.shape, self.n)
        return torch.diag_embed(m2)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return LKJCovariancePrior(
            self.n,
            self.eta.expand(batch_shape).clone(),
            self.sd_prior.expand(batch_shape),
            validate_args=self._validate_args,
        )
