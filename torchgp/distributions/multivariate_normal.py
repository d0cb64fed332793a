r"""``MultivariateNormal`` over a covariance that may be lazy (a kernel matrix never formed whole).

Shapes: ``mean (*batch, n)``, covariance ``(*batch, n, n)``; ``batch_shape = *batch``,
``event_shape = (n,)``. Sampling and ``log_prob`` factorise the covariance only when called, and
``log_prob`` runs through :func:`torchgp.linalg.inv_quad_logdet` (analytic backward; iterative
path for large n).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, Normal, constraints

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.errors import ShapeError
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.linalg.inv_quad_logdet import gaussian_log_prob, inv_quad_logdet
from torchgp.linalg.minres import ciq_mvn_samples
from torchgp.linalg.operators import AddedDiagOperator, DenseOperator, DiagOperator, Operator, as_operator


class MultivariateNormal(Distribution):
    """Gaussian ``N(mean, covariance)`` with GPyTorch's interface.

    Args:
        mean: ``(*batch, n)``.
        covariance_matrix: ``(*batch, n, n)`` tensor or :class:`~torchgp.linalg.Operator`.

    Example:
        >>> import math, torch
        >>> from torchgp.distributions import MultivariateNormal
        >>> d = MultivariateNormal(torch.zeros(2), torch.eye(2))
        >>> abs(d.log_prob(torch.zeros(2)).item() + math.log(2 * math.pi)) < 1e-6
        True
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, mean: torch.Tensor, covariance_matrix, validate_args: bool = False):
        if mean.dim() < 1:
            raise ShapeError("MultivariateNormal: mean must have shape (*batch, n); got a scalar.")
        cov = as_operator(covariance_matrix)
        n = mean.shape[-1]
        if cov.shape[-1] != n or cov.shape[-2] != n:
            raise ShapeError(
                f"MultivariateNormal: mean has shape {tuple(mean.shape)} (n = {n}) but the covariance has "
                f"shape {tuple(cov.shape)}; it must be (*batch, {n}, {n})."
            )
        batch = broadcast_shapes(mean.shape[:-1], cov.shape[:-2])
        # no expand (and no autograd node for it) when the mean already has the batch shape
        self._mean = mean if mean.shape[:-1] == batch else mean.expand(*batch, n)
        self._covar = cov
        self._chol = None
        super().__init__(batch_shape=batch, event_shape=torch.Size([n]), validate_args=False)

    # ------------------------------------------------------------------ moments
    @property
    def mean(self) -> torch.Tensor:
        return self._mean

    @property
    def loc(self) -> torch.Tensor:
        return self._mean

    @property
    def lazy_covariance_matrix(self) -> Operator:
        return self._covar

    @property
    def islazy(self) -> bool:
        return not isinstance(self._covar, DenseOperator)

    @property
    def covariance_matrix(self) -> torch.Tensor:
        cov = self._covar.to_dense()
        return cov.expand(*self.batch_shape, *cov.shape[-2:])

    @property
    def variance(self) -> torch.Tensor:
        """Marginal variances ``(*batch, n)``, clamped below at ``settings.min_variance``."""
        if settings.skip_posterior_variances.on():
            return torch.zeros_like(self._mean)
        var = self._covar.diagonal().expand(*self.batch_shape, self.event_shape[0])
        return var.clamp_min(settings.min_variance.value(var.dtype))

    @property
    def stddev(self) -> torch.Tensor:
        return self.variance.sqrt()

    def confidence_region(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean - 2σ, mean + 2σ)``, each ``(*batch, n)`` (≈ 95% pointwise interval)."""
        std2 = 2 * self.stddev
        return self.mean - std2, self.mean + std2

    # ------------------------------------------------------------------ factor / samples
    @property
    def scale_tril(self) -> torch.Tensor:
        """Lower Cholesky factor of the covariance, ``(*batch, n, n)`` (jitter added if needed)."""
        if self._chol is None:
            self._chol = psd_safe_cholesky(self.covariance_matrix)
        return self._chol

    def rsample(self, sample_shape=torch.Size(), base_samples: torch.Tensor | None = None) -> torch.Tensor:
        """Reparameterised samples ``(*sample_shape, *batch, n)``: mean + L ε."""
        shape = torch.Size(sample_shape) + self._mean.shape
        if base_samples is None:
            base_samples = torch.randn(shape, dtype=self._mean.dtype, device=self._mean.device)
        elif base_samples.shape[-len(self._mean.shape) :] != self._mean.shape:
            raise ShapeError(
                f"base_samples must end in shape {tuple(self._mean.shape)}; got {tuple(base_samples.shape)}."
            )
        if settings.ciq_samples.on():
            # (Pleiss et al. 2020, §4): the symmetric root K^{1/2} ε by contour integral quadrature
            return self._mean + ciq_mvn_samples(self.covariance_matrix, base_samples)
        L = self.scale_tril
        return self._mean + (L @ base_samples.unsqueeze(-1)).squeeze(-1)

    def sample(self, sample_shape=torch.Size(), base_samples=None) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, base_samples)

    @property
    def base_sample_shape(self) -> torch.Size:
        """Shape of the standard normal draw behind one sample, without batch dimensions: ``(n,)``."""
        return self.event_shape

    def get_base_samples(self, sample_shape=torch.Size()) -> torch.Tensor:
        """I.i.d. standard normals ``(*sample_shape, *batch, n)`` for ``rsample(sample_shape, base_samples=)``."""
        shape = torch.Size(sample_shape) + self._mean.shape
        with torch.no_grad():
            return torch.randn(shape, dtype=self._mean.dtype, device=self._mean.device)

    @property
    def precision_matrix(self) -> torch.Tensor:
        """The inverse covariance ``Σ⁻¹ (*batch, n, n)``, from the Cholesky factor (``cholesky_inverse``)."""
        return torch.cholesky_inverse(self.scale_tril)

    # ------------------------------------------------------------------ densities
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        r"""``log N(value; mean, K)``, ``(*batch)``.

        .. math:: -\tfrac12 \big[(y-\mu)^\top K^{-1}(y-\mu) + \log|K| + n\log 2\pi\big]
        """
        return self._scaled_log_prob(value, 1.0)

    def _scaled_log_prob(self, value: torch.Tensor, scale: float) -> torch.Tensor:
        """``scale · log_prob(value)`` ``(*batch)``, the Python float ``scale`` folded into the density's one node
        (:func:`~torchgp.linalg.inv_quad_logdet.gaussian_log_prob`; the exact MLL passes ``1/n``)."""
        n = self.event_shape[0]
        if value.shape[-1] != n:
            raise ShapeError(f"log_prob: value has {value.shape[-1]} entries in its last dimension; expected n = {n}.")
        return gaussian_log_prob(self._covar, value, self._mean, scale)

    def entropy(self) -> torch.Tensor:
        n = self.event_shape[0]
        _, logdet = inv_quad_logdet(self._covar, None)
        return 0.5 * (n * (1 + math.log(2 * math.pi)) + logdet)

    # ------------------------------------------------------------------ algebra
    def __add__(self, other):
        if isinstance(other, MultivariateNormal):
            return MultivariateNormal(self.mean + other.mean, self._covar + other._covar)  # structure kept
        if isinstance(other, (int, float, torch.Tensor)):
            return MultivariateNormal(self.mean + other, self._covar)
        return NotImplemented

    __radd__ = __add__

    def __mul__(self, other):
        if not isinstance(other, (int, float)):
            raise TypeError("MultivariateNormal can only be multiplied by a Python scalar.")
        return MultivariateNormal(self.mean * other, self._covar * float(other) ** 2)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self * (1.0 / other)

    def add_jitter(self, noise: float = 1e-4) -> MultivariateNormal:
        return MultivariateNormal(self.mean, AddedDiagOperator(self._covar, torch.tensor(noise, dtype=self.mean.dtype)))

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        cov = self._covar.expand(*batch_shape, *self.event_shape, *self.event_shape)
        return MultivariateNormal(self.mean.expand(*batch_shape, *self.event_shape), cov)

    def __getitem__(self, idx):
        """``mvn[idx]`` indexes the mean ``(*batch, n)`` as a tensor; the covariance follows (GPyTorch's rule).

        Indices of batch dimensions only (``mvn[0]`` of a batch of GPs) select GPs. An index of the last
        (point) dimension selects points: a slice or an index tensor keeps their joint covariance
        (``mvn[..., 2:5]``: ``K[2:5, 2:5]``), an integer keeps only the marginal variance of that point, so
        ``mvn[..., 3]`` of a batch ``(b, n)`` is a diagonal ``(b,)`` MVN over the batch members' values.
        """
        if not isinstance(idx, tuple):
            idx = (idx,)
        nb, n = len(self.batch_shape), self.event_shape[0]
        if idx.count(Ellipsis) > 1:
            raise IndexError(f"MultivariateNormal index {idx} has more than one Ellipsis.")
        if Ellipsis in idx:  # spell the Ellipsis out as full slices of the dimensions it stands for
            at = idx.index(Ellipsis)
            fill = nb + 1 - (len(idx) - 1)
            idx = idx[:at] + (slice(None),) * max(fill, 0) + idx[at + 1 :]
        if len(idx) > nb + 1:
            raise IndexError(
                f"MultivariateNormal index {idx} has too many dimensions for its mean of shape {tuple(self.mean.shape)}."
            )
        mean = self.mean[idx]
        if len(idx) <= nb:
            return MultivariateNormal(mean, self._covar.expand(*self.batch_shape, n, n)[idx])
        rest, last = idx[:-1], idx[-1]
        if isinstance(last, int):
            if mean.dim() == 0:
                raise IndexError(
                    f"MultivariateNormal index {idx} selects one value, which leaves no dimension for a "
                    f"distribution; index a range (e.g. mvn[..., {last}:{last + 1}]) for a one-point "
                    "MultivariateNormal, or read mvn.mean[idx] and mvn.variance[idx]."
                )
            return MultivariateNormal(mean, DiagOperator(self.variance[(*rest, last)]))
        K = self.covariance_matrix
        if isinstance(last, slice):
            return MultivariateNormal(mean, K[(*rest, last, last)])
        return MultivariateNormal(mean, K[(*rest, last, slice(None))][..., last])

    def to_data_independent_dist(self) -> Normal:
        """The independent-marginals Normal ``(*batch, n)`` (drops correlations)."""
        return Normal(self.mean, self.stddev)

    def __repr__(self) -> str:
        return f"MultivariateNormal(batch_shape={tuple(self.batch_shape)}, n={self.event_shape[0]})"
