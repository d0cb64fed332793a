"""The ``Prior`` base: an ``nn.Module`` (its parameters are buffers) that is a ``torch.distributions.Distribution``.

A prior's parameters are buffers, so ``.to(device)``, ``.double()`` and ``state_dict`` work, and the
buffer names are the constructor's argument names (``GammaPrior(concentration, rate)``). The
``torch.distributions`` interface (``mean``, ``variance``, ``sample``, ``rsample``, ``log_prob``,
``support``, ``batch_shape``, ``event_shape``, ``expand``, ...) is answered by the
distribution :meth:`Prior.distribution` builds from the buffers on demand, so it always reflects
their current values. ``log_prob(x)`` applies the optional ``transform`` to ``x`` first.
"""

from __future__ import annotations

import copy

import torch
from torch import distributions as D
from torch import nn


class Prior(nn.Module, D.Distribution):
    """Base prior; subclasses implement :meth:`distribution` (or override the methods they answer themselves).

    Args:
        transform: optional map applied to a value before ``log_prob`` (GPyTorch's ``transform``).
        validate_args: passed to the ``torch.distributions`` object.
        **params: the prior's parameters, registered as buffers under these names.

    Class attributes:
        _event_dims: ``{buffer name: number of trailing event dimensions}`` (default 0), used by
            :meth:`expand` (e.g. a multivariate normal's ``loc`` has 1, its covariance 2).
    """

    _event_dims: dict[str, int] = {}

    def __init__(self, transform=None, validate_args=False, **params):
        nn.Module.__init__(self)
        for name, value in params.items():
            # Python numbers take the default dtype; float tensors keep theirs (a float64 loc stays float64)
            floating = torch.is_tensor(value) and value.is_floating_point()
            self.register_buffer(name, torch.as_tensor(value, dtype=None if floating else torch.get_default_dtype()))
        self._transform = transform
        self._validate_args = bool(validate_args)

    # ------------------------------------------------------------------ the distribution
    def distribution(self) -> D.Distribution:
        """The ``torch.distributions`` object of the current buffer values."""
        raise NotImplementedError(f"{type(self).__name__} defines no torch.distributions equivalent.")

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._transform is None else self._transform(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density at ``transform(x)``; shape of ``x`` broadcast with the batch, event dims reduced."""
        return self.distribution().log_prob(self.transform(x))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """``(*sample_shape, *batch_shape, *event_shape)`` draws (no gradient)."""
        return self.distribution().sample(torch.Size(sample_shape))

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Reparameterised draws ``(*sample_shape, *batch_shape, *event_shape)``."""
        return self.distribution().rsample(torch.Size(sample_shape))

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        return self.distribution().cdf(value)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        return self.distribution().icdf(value)

    def entropy(self) -> torch.Tensor:
        return self.distribution().entropy()

    @property
    def mean(self) -> torch.Tensor:
        return self.distribution().mean

    @property
    def mode(self) -> torch.Tensor:
        return self.distribution().mode

    @property
    def variance(self) -> torch.Tensor:
        return self.distribution().variance

    @property
    def stddev(self) -> torch.Tensor:
        return self.variance.sqrt()

    @property
    def support(self):
        return self.distribution().support

    @property
    def arg_constraints(self):
        return self.distribution().arg_constraints

    @property
    def has_rsample(self) -> bool:
        return self.distribution().has_rsample

    @property
    def batch_shape(self) -> torch.Size:
        return self.distribution().batch_shape

    @property
    def event_shape(self) -> torch.Size:
        return self.distribution().event_shape

    def pyro_distribution(self):
        """This prior as a ``pyro.distributions`` object, for ``pyro.sample(name, prior.pyro_distribution())``.

        Draws and densities are the prior's; with a ``transform`` ``t`` (an invertible
        ``torch.distributions.transforms.Transform``) it is the distribution of ``t⁻¹(z)``, ``z`` a draw of the
        prior, whose density includes the change-of-variables Jacobian. Needs ``pyro-ppl``.
        """
        from torchgp import _pyro

        return _pyro.pyro_distribution(self)

    # ------------------------------------------------------------------ batching
    def expand(self, batch_shape, _instance=None) -> Prior:
        """A copy whose parameters are broadcast to ``batch_shape`` (event dimensions kept)."""
        batch_shape = torch.Size(batch_shape)
        new = copy.deepcopy(self)
        for name, buf in self.named_buffers(recurse=False):
            k = self._event_dims.get(name, 0)
            event = buf.shape[buf.dim() - k :] if k else torch.Size()
            setattr(new, name, buf.expand(batch_shape + event).clone())
        return new

    # ------------------------------------------------------------------ GPyTorch's state_dict layout
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        # GPyTorch keeps some parameters of torch-transformed distributions as ``_buffered_<name>``.
        for name in self._buffers:
            old = f"{prefix}_buffered_{name}"
            if prefix + name not in state_dict and old in state_dict:
                state_dict[prefix + name] = state_dict.pop(old)
        self._gpytorch_state(state_dict, prefix)
        for name, buf in self._buffers.items():
            value = state_dict.get(prefix + name)
            if value is not None and buf is not None and value.shape != buf.shape and value.numel() == buf.numel():
                state_dict[prefix + name] = value.reshape(buf.shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    def _gpytorch_state(self, state_dict: dict, prefix: str) -> None:
        """Map the rest of GPyTorch's layout for this prior into ``state_dict`` (in place); default nothing."""

    def extra_repr(self) -> str:
        return ", ".join(f"{n}={b.tolist() if b.numel() < 5 else tuple(b.shape)}" for n, b in self.named_buffers())

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)
