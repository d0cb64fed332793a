r"""Observation-noise models: the diagonal σ²(x) added to the kernel matrix.

Each returns the noise variances ``(*batch, n)`` for ``n`` inputs.
"""

from __future__ import annotations

import warnings

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.constraints import GreaterThan
from torchgp.errors import InputError, NumericalWarning, ShapeError
from torchgp.module import Module


class HomoskedasticNoise(Module):
    """One learned noise variance σ² per batch member (``raw_noise``, default ``GreaterThan(1e-4)``)."""

    def __init__(self, noise_prior=None, noise_constraint=None, batch_shape=torch.Size(), num_tasks: int = 1):
        super().__init__()
        self.batch_shape = torch.Size(batch_shape)
        constraint = GreaterThan(1e-4) if noise_constraint is None else noise_constraint
        init = constraint.transform(torch.zeros(*self.batch_shape, num_tasks))
        self.register_constrained("noise", init, constraint, noise_prior)

    def forward(self, *params, shape: torch.Size | None = None, **kwargs) -> torch.Tensor:
        """σ² broadcast to ``shape`` (``(*batch, n)``) or to the inputs' ``(*batch, n)``."""
        if shape is None:
            x = params[0] if params and torch.is_tensor(params[0]) else None
            shape = x.shape[:-1] if x is not None and x.dim() > 1 else torch.Size([x.shape[0] if x is not None else 1])
        noise = self.noise  # (*batch, 1)
        return noise.expand(*broadcast_shapes(noise.shape[:-1], shape[:-1]), shape[-1])


class FixedGaussianNoise(Module):
    """Known per-point noise variances, ``(*batch, n)``; not trained.

    Args:
        noise: ``(*batch, n)`` variances (≥ ``settings.min_fixed_noise``; smaller values are raised
            to it with a warning).
    """

    def __init__(self, noise: torch.Tensor):
        super().__init__()
        noise = torch.as_tensor(noise)
        if noise.dim() == 0:
            raise ShapeError("FixedGaussianNoise: noise must have shape (*batch, n), one variance per point.")
        if not torch.all(torch.isfinite(noise)) or torch.any(noise < 0):
            raise InputError("FixedGaussianNoise: noise variances must be finite and non-negative.")
        floor = settings.min_fixed_noise.value(noise.dtype)
        if torch.any(noise < floor):
            warnings.warn(
                f"Fixed noise variances below {floor:g} were raised to {floor:g} for numerical stability "
                "(settings.min_fixed_noise).",
                NumericalWarning,
                stacklevel=3,
            )
            noise = noise.clamp_min(floor)
        self.register_buffer("noise", noise)  # saved with the model (GPyTorch keeps it out of state_dict)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        # GPyTorch's state dicts hold no ``noise``: loading one keeps the noise this module was built with.
        absent = prefix + "noise" not in state_dict
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)
        if absent and prefix + "noise" in missing:
            missing.remove(prefix + "noise")

    def forward(self, *params, shape: torch.Size | None = None, noise: torch.Tensor | None = None, **kwargs):
        if noise is not None:
            return torch.as_tensor(noise, dtype=self.noise.dtype, device=self.noise.device)
        n = (
            shape[-1]
            if shape is not None
            else (params[0].shape[-2] if params and torch.is_tensor(params[0]) and params[0].dim() > 1 else None)
        )
        if n is None or n == self.noise.shape[-1]:
            return self.noise
        warnings.warn(
            f"FixedNoiseGaussianLikelihood got {n} points but holds noise for {self.noise.shape[-1]}; using the "
            "mean training noise for them. Pass noise=... (shape (*batch, n)) for new points.",
            stacklevel=4,
        )
        return self.noise.mean(-1, keepdim=True).expand(*self.noise.shape[:-1], n)


class HeteroskedasticNoise(Module):
    """Input-dependent noise σ²(x) = constraint(g(x)) from a learned model ``g``.

    Args:
        noise_model: a module mapping ``x (*batch, n, d)`` to raw values ``(*batch, n)`` (or to a
            MultivariateNormal, whose mean is used, as for a GP on the log-noise).
        noise_indices: for a noise model with several outputs (``(*batch, n, t)`` raw values, e.g. a
            multitask GP), the output column(s) that give the noise; None: the model has one output.
        noise_constraint: maps raw values to variances (default ``GreaterThan(1e-4)``).
    """

    def __init__(self, noise_model: torch.nn.Module, noise_indices=None, noise_constraint=None):
        super().__init__()
        self.noise_model = noise_model
        self.noise_indices = noise_indices
        # GPyTorch's attribute (and state_dict) name: ``_noise_constraint``
        self._noise_constraint = GreaterThan(1e-4) if noise_constraint is None else noise_constraint

    @property
    def noise_constraint(self):
        """The constraint mapping the noise model's raw values to variances."""
        return self._noise_constraint

    def forward(self, *params, shape=None, noise=None, **kwargs):
        """σ²(x) ``(*batch, n)`` at the inputs ``params[0]`` ``(*batch, n, d)`` (or a tuple of inputs);
        ``noise=`` given: that tensor itself. A GP noise model is evaluated in eval mode (its posterior)."""
        if noise is not None:
            return noise
        inputs = tuple(params[0]) if len(params) == 1 and isinstance(params[0], (list, tuple)) else params
        if not inputs or not torch.is_tensor(inputs[0]):
            raise InputError(
                "Heteroskedastic noise needs the inputs: call likelihood(output, X) (the exact MLL passes the "
                "training inputs itself)."
            )
        training = self.noise_model.training
        try:
            self.noise_model.eval()  # the noise model's prediction at X (a GP: its posterior), as GPyTorch
            with settings.detach_test_caches(False):
                out = self.noise_model(*inputs)
        finally:
            self.noise_model.train(training)
        raw = out.mean if hasattr(out, "mean") and not torch.is_tensor(out) else out
        if self.noise_indices is not None:
            raw = raw[..., self.noise_indices]
        if raw.dim() == inputs[0].dim():
            raw = raw.squeeze(-1)
        return self._noise_constraint.transform(raw)
