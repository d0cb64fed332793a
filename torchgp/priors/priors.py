"""The priors of GPyTorch backed by ``torch.distributions`` (the base class lives in :mod:`.prior`).

Each class states its density, builds the ``torch.distributions`` object from its buffers and so
answers the whole distribution interface (``mean``, ``variance``, ``sample``, ``rsample``,
``log_prob``, ``support``, ``batch_shape``, ``event_shape``, ``expand``).
"""

from __future__ import annotations

import math

import torch
from torch import distributions as D

from torchgp.errors import InputError
from torchgp.priors.prior import Prior


class NormalPrior(Prior):
    """N(loc, scale²)."""

    def __init__(self, loc, scale, validate_args=False, transform=None):
        super().__init__(transform, validate_args, loc=loc, scale=scale)

    def distribution(self):
        return D.Normal(self.loc, self.scale, validate_args=self._validate_args)


class HalfNormalPrior(Prior):
    """``|N(0, scale²)|`` on x ≥ 0."""

    def __init__(self, scale, validate_args=False, transform=None):
        super().__init__(transform, validate_args, scale=scale)

    def distribution(self):
        return D.HalfNormal(self.scale, validate_args=self._validate_args)


class LogNormalPrior(Prior):
    """log x ~ N(loc, scale²)."""

    def __init__(self, loc, scale, validate_args=False, transform=None):
        super().__init__(transform, validate_args, loc=loc, scale=scale)

    def distribution(self):
        return D.LogNormal(self.loc, self.scale, validate_args=self._validate_args)


class GammaPrior(Prior):
    """Gamma(concentration α, rate β): density ∝ x^(α-1) e^(-βx); mean α/β, variance α/β²."""

    def __init__(self, concentration, rate, validate_args=False, transform=None):
        super().__init__(transform, validate_args, concentration=concentration, rate=rate)

    def distribution(self):
        return D.Gamma(self.concentration, self.rate, validate_args=self._validate_args)


class HalfCauchyPrior(Prior):
    """Half-Cauchy(scale) on x ≥ 0."""

    def __init__(self, scale, validate_args=False, transform=None):
        super().__init__(transform, validate_args, scale=scale)

    def distribution(self):
        return D.HalfCauchy(self.scale, validate_args=self._validate_args)


class UniformPrior(Prior):
    """Uniform(a, b); log-density ``-log(b - a)`` inside, ``-inf`` outside (never an error)."""

    def __init__(self, a, b, validate_args=False, transform=None):
        super().__init__(transform, validate_args, a=a, b=b)

    def distribution(self):
        return D.Uniform(self.a, self.b, validate_args=False)

    def log_prob(self, x):
        x = self.transform(x)
        inside = (x >= self.a) & (x <= self.b)
        return torch.where(inside, -torch.log(self.b - self.a), torch.full_like(x, -math.inf))

    def _gpytorch_state(self, state_dict, prefix):
        # GPyTorch's UniformPrior stores no buffers: keep the constructor's values.
        for name in ("a", "b"):
            state_dict.setdefault(prefix + name, getattr(self, name))


class SmoothedBoxPrior(Prior):
    r"""Uniform on the box ``[a, b]`` with Gaussian tails of width ``sigma`` (normalised).

    .. math:: \log p(x) = \sum_i \Big[-\log\big(b_i - a_i + \sqrt{2\pi}\,\sigma_i\big)
              - \tfrac12 \big(d_i(x)/\sigma_i\big)^2\Big], \quad d_i(x) = \max(0, a_i - x_i, x_i - b_i)

    As in GPyTorch the box is the event: ``a`` of shape ``(*batch, k)`` (a number is ``(1,)``), and
    ``log_prob`` sums over the last dimension. A draw is uniform in the box with probability
    ``(b - a) / (b - a + √(2π) σ)``, else ``a - |ε|`` or ``b + |ε|`` with ``ε ~ N(0, σ²)``.
    """

    _event_dims = {"a": 1, "b": 1, "sigma": 1}

    def __init__(self, a, b, sigma=0.01, validate_args=False, transform=None):
        a, b, sigma = (
            torch.as_tensor(v, dtype=torch.get_default_dtype()) if not torch.is_tensor(v) else v for v in (a, b, sigma)
        )
        a = a.reshape(-1) if a.dim() < 1 else a
        # own memory for each buffer: broadcast views have zero strides, which byte views of the state refuse
        a, b, sigma = (t.clone(memory_format=torch.contiguous_format) for t in torch.broadcast_tensors(a, b, sigma))
        if not bool((a < b).all()):
            raise InputError(f"SmoothedBoxPrior needs a < b element-wise; got a = {a.tolist()}, b = {b.tolist()}.")
        super().__init__(transform, validate_args, a=a, b=b, sigma=sigma)

    @property
    def batch_shape(self):
        return self.a.shape[:-1]

    @property
    def event_shape(self):
        return self.a.shape[-1:]

    @property
    def support(self):
        return D.constraints.real

    @property
    def arg_constraints(self):
        return {"a": D.constraints.real, "b": D.constraints.real, "sigma": D.constraints.positive}

    @property
    def has_rsample(self):
        return True

    def _log_norm(self):
        return torch.log(self.b - self.a + math.sqrt(2 * math.pi) * self.sigma)

    def log_prob(self, x):
        x = self.transform(x)
        dist = torch.clamp(torch.maximum(self.a - x, x - self.b), min=0)
        return (-self._log_norm() - 0.5 * (dist / self.sigma) ** 2).sum(-1)

    def rsample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape) + self.a.shape
        width = self.b - self.a
        p_tail = math.sqrt(2 * math.pi) * self.sigma / (width + math.sqrt(2 * math.pi) * self.sigma)
        tail = torch.rand(shape, dtype=self.a.dtype, device=self.a.device) < p_tail
        u = torch.rand(shape, dtype=self.a.dtype, device=self.a.device)
        eps = torch.randn(shape, dtype=self.a.dtype, device=self.a.device) * self.sigma
        tails = torch.where(eps < 0, self.a + eps, self.b + eps)  # a - |ε| or b + |ε|, each with probability ½
        return torch.where(tail, tails, self.a + u * width)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    @property
    def mean(self):
        return (self.a + self.b) / 2  # symmetric about the centre

    @property
    def variance(self):
        # Z·Var = ∫_{-r}^{r} t² dt + 2∫_0^∞ (r + t)² e^{-t²/2σ²} dt = (2r)³/12 + 2(r²·g + 2rσ² + σ²·g),
        # with half-width r, g = ∫_0^∞ e^{-t²/2σ²} dt = σ√(π/2) and Z = b - a + √(2π)σ.
        r, s = (self.b - self.a) / 2, self.sigma
        half_gauss = s * math.sqrt(math.pi / 2)  # ∫_0^∞ e^{-t²/2σ²} dt
        tails = 2 * (r**2 * half_gauss + 2 * r * s**2 + s**2 * half_gauss)
        return ((2 * r) ** 3 / 12 + tails) / torch.exp(self._log_norm())

    @property
    def mode(self):
        return self.mean

    def _gpytorch_state(self, state_dict, prefix):
        for name in ("tails.loc", "tails.scale"):  # GPyTorch's tails are N(0, σ²): derived from sigma
            state_dict.pop(prefix + name, None)


class MultivariateNormalPrior(Prior):
    """N(loc, covariance_matrix) over a vector-valued parameter; ``loc (*batch, n)``, covariance ``(*batch, n, n)``."""

    _event_dims = {"loc": 1, "covariance_matrix": 2}

    def __init__(
        self,
        loc,
        covariance_matrix=None,
        precision_matrix=None,
        scale_tril=None,
        validate_args=False,
        transform=None,
    ):
        given = [m for m in (covariance_matrix, scale_tril, precision_matrix) if m is not None]
        if len(given) != 1:
            raise InputError(
                "MultivariateNormalPrior needs exactly one of covariance_matrix, scale_tril, precision_matrix."
            )
        if scale_tril is not None:
            covariance_matrix = scale_tril @ scale_tril.mT
        elif precision_matrix is not None:
            covariance_matrix = torch.linalg.inv(precision_matrix)
        super().__init__(transform, validate_args, loc=loc, covariance_matrix=covariance_matrix)

    def distribution(self):
        return D.MultivariateNormal(
            self.loc, covariance_matrix=self.covariance_matrix, validate_args=self._validate_args
        )

    def _gpytorch_state(self, state_dict, prefix):
        key = prefix + "_unbroadcasted_scale_tril"  # GPyTorch stores the Cholesky factor
        if key in state_dict and prefix + "covariance_matrix" not in state_dict:
            L = state_dict.pop(key)
            state_dict[prefix + "covariance_matrix"] = L @ L.mT
