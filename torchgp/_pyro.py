"""Pyro support for torchgp modules: priors as Pyro distributions, sampled modules, loading posterior samples.

This module imports ``pyro`` and is itself imported only by the methods that need it
(:meth:`torchgp.module.Module.pyro_sample_from_prior`, :meth:`~torchgp.module.Module.pyro_load_from_samples`,
:meth:`torchgp.priors.Prior.pyro_distribution`), so ``import torchgp`` never imports Pyro.

Two ways of writing a value into a hyperparameter, chosen by the module's ``_pyro_mode``:

* ``"random"`` (the copy made by ``pyro_sample_from_prior``): the raw parameter is replaced by the plain
  tensor ``constraint.inverse_transform(value)``, so the model's output is a differentiable function of
  the ``pyro.sample``\\ d value (what NUTS/HMC need for the potential's gradient);
* ``"load"`` (inside ``pyro_load_from_samples``): the raw parameter is replaced by a new ``nn.Parameter``
  of the broadcast shape of the value and the old parameter, so ``(num_samples, *shape)`` samples make a
  batch of ``num_samples`` models.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from torchgp._shapes import broadcast_shapes

try:
    import pyro
    import pyro.distributions as pyro_dist
    from pyro.distributions import TorchDistribution
except ImportError as err:  # pragma: no cover - exercised only without pyro
    raise ImportError(
        "torchgp's Pyro integration needs pyro-ppl: pip install 'torchgp[pyro]' (or pip install pyro-ppl)."
    ) from err

from torchgp.errors import InputError

__all__ = ["pyro", "pyro_dist", "PriorDistribution", "pyro_distribution", "sample_from_prior", "load_from_samples"]


# ---------------------------------------------------------------------- priors as Pyro distributions
class PriorDistribution(TorchDistribution):
    """A torchgp :class:`~torchgp.priors.Prior` (without its ``transform``) seen as a Pyro distribution.

    ``log_prob``, ``sample``, ``rsample``, ``support``, ``batch_shape`` and ``event_shape`` are the prior's;
    ``expand`` and ``to_event`` come from Pyro's mixin.

    Args:
        prior: the torchgp prior; its ``transform`` is ignored here (see :func:`pyro_distribution`).

    Shapes:
        as the prior: ``sample(sample_shape)`` is ``(*sample_shape, *batch_shape, *event_shape)``.
    """

    arg_constraints: dict = {}

    def __init__(self, prior):
        self.prior = copy.copy(prior)  # shallow: shares the buffers; only the copy's transform is dropped
        self.prior._transform = None
        super().__init__(prior.batch_shape, prior.event_shape, validate_args=False)

    @property
    def support(self):
        return self.prior.support

    @property
    def has_rsample(self) -> bool:
        return self.prior.has_rsample

    @property
    def mean(self):
        return self.prior.mean

    @property
    def variance(self):
        return self.prior.variance

    def log_prob(self, value):
        return self.prior.log_prob(value)

    def sample(self, sample_shape=torch.Size()):
        return self.prior.sample(torch.Size(sample_shape))

    def rsample(self, sample_shape=torch.Size()):
        return self.prior.rsample(torch.Size(sample_shape))


def pyro_distribution(prior) -> TorchDistribution:
    """The Pyro distribution of a torchgp prior.

    Without a ``transform`` it is the prior itself. A prior with a ``transform`` ``t`` (GPyTorch's meaning:
    ``log_prob(x) = log p(t(x))``) is the distribution of ``x = t⁻¹(z)``, ``z ~ p``: its draws satisfy
    ``t(x) ~ p`` and its density carries the Jacobian, ``log p(t(x)) + log|t'(x)|`` (change of variables),
    so Pyro's samplers see a proper density. ``t`` must then be an invertible
    ``torch.distributions.transforms.Transform``.

    Raises:
        InputError: the prior's transform is a plain callable, which Pyro cannot invert.
    """
    base = PriorDistribution(prior)
    transform = prior._transform
    if transform is None:
        return base
    if not isinstance(transform, torch.distributions.transforms.Transform):
        raise InputError(
            f"{type(prior).__name__} has transform {transform!r}, a plain callable; to sample it with Pyro the "
            "transform must be an invertible torch.distributions.transforms.Transform (e.g. ExpTransform() "
            "instead of torch.exp)."
        )
    return pyro_dist.TransformedDistribution(base, [transform.inv])


# ---------------------------------------------------------------------- writing sampled values
def assign_raw(module: nn.Module, raw_name: str, raw_value: torch.Tensor) -> None:
    """Replace the raw parameter ``raw_name`` of ``module`` by ``raw_value`` as ``module._pyro_mode`` says.

    The new value takes the broadcast shape of ``raw_value`` and the old parameter (a batch of samples
    ``(S, *shape)`` against ``shape`` gives ``(S, *shape)``).
    """
    old = module._parameters.get(raw_name)
    if old is None:
        old = module.__dict__[raw_name]
    try:
        shape = broadcast_shapes(raw_value.shape, old.shape)
    except RuntimeError:
        raise InputError(
            f"{type(module).__name__}.{raw_name} has shape {tuple(old.shape)}; a sample of shape "
            f"{tuple(raw_value.shape)} does not broadcast with it. Samples must have shape (num_samples, *shape)."
        ) from None
    raw_value = raw_value.to(dtype=old.dtype, device=old.device).expand(shape)
    if module.__dict__["_pyro_mode"] == "load":
        module._parameters[raw_name] = nn.Parameter(raw_value.detach().clone(), requires_grad=old.requires_grad)
        module.__dict__.pop(raw_name, None)
    else:
        module._parameters.pop(raw_name, None)
        object.__setattr__(module, raw_name, raw_value)


def assign_constrained(module: nn.Module, name: str, value) -> None:
    """Write the constrained value ``value`` of ``name`` (``lengthscale``) through its constraint's inverse."""
    raw_name = module._constrained[name]
    constraint = module._modules[f"{raw_name}_constraint"]
    value = torch.as_tensor(value)
    if module.__dict__["_pyro_mode"] == "load":  # given values are checked; a sampler's are its own
        module._check_value(name, value.detach(), constraint)
    assign_raw(module, raw_name, constraint.inverse_transform(value))


def _write(owner: nn.Module, setting, value) -> None:
    """Write a sampled ``value`` through the prior's setting closure ``setting``.

    A setter of a property ``name`` backed by ``raw_<name>`` (and its optional ``raw_<name>_constraint``), as
    ``ConstantMean.constant``, is written on the raw tensor directly: the property's own setter copies in place.
    """
    from torchgp.module import _Setter

    name = getattr(setting, "name", None)
    raw_name = f"raw_{name}"
    backed = raw_name in owner._parameters or raw_name in owner.__dict__
    if isinstance(setting, _Setter) and name not in owner._constrained and backed:
        constraint = owner._modules.get(f"{raw_name}_constraint")
        value = torch.as_tensor(value)
        assign_raw(owner, raw_name, value if constraint is None else constraint.inverse_transform(value))
    else:
        setting(owner, value)


def _set_mode(module: nn.Module, mode: str | None) -> None:
    from torchgp.module import Module

    for sub in module.modules():
        if isinstance(sub, Module):
            if mode is None:
                sub.__dict__.pop("_pyro_mode", None)
            else:
                object.__setattr__(sub, "_pyro_mode", mode)


def _priors_once(module):
    """``(full name, owner, prior, closure, setting)`` for each prior object once (the first name it has)."""
    seen = set()
    for name, owner, prior, closure, setting in module.named_priors():
        if id(prior) not in seen:
            seen.add(id(prior))
            yield name, owner, prior, closure, setting


# ---------------------------------------------------------------------- the two Module methods
def sample_from_prior(module):
    """A copy of ``module`` whose prior'd hyperparameters hold ``pyro.sample(<module path>.<prior name>, prior)``.

    Each prior is expanded to the shape of the value it is on (``closure(module).shape``), and the value is
    written through the prior's setting closure; in the copy that write keeps the autograd graph back to the
    sampled value.

    Raises:
        InputError: a prior has no setting closure, so a sampled value cannot be written back.
    """
    new = copy.deepcopy(module)
    _set_mode(new, "random")
    for name, owner, prior, closure, setting in _priors_once(new):
        if setting is None:
            raise InputError(
                f"pyro_sample_from_prior: the prior {name} has no setting closure, so a sampled value cannot be "
                "written back; register it with register_prior(name, prior, closure, setting_closure)."
            )
        dist = pyro_distribution(prior)
        shape = closure(owner).shape
        event = len(dist.event_shape)
        batch = shape[: len(shape) - event] if event else shape
        value = pyro.sample(name, dist.expand(batch))
        _write(owner, setting, value)
    return new


def load_from_samples(module, samples_dict: dict) -> None:
    """Load ``{prior name: (num_samples, *shape)}`` into ``module`` in place: it becomes a batch of models.

    Keys are prior names (``covar_module.base_kernel.lengthscale_prior``), as ``pyro_sample_from_prior``
    names its sample sites and as ``MCMC.get_samples()`` returns them. Priors without a key are left alone.
    """
    _set_mode(module, "load")
    try:
        for name, owner, _prior, closure, setting in _priors_once(module):
            if name not in samples_dict:
                continue
            if setting is None:
                raise InputError(f"pyro_load_from_samples: the prior {name} has no setting closure to load with.")
            before = closure(owner).dim()
            _write(owner, setting, samples_dict[name])
            _grow_batch_shape(owner, closure(owner).shape[: closure(owner).dim() - before])
    finally:
        _set_mode(module, None)


def _grow_batch_shape(owner: nn.Module, extra: torch.Size) -> None:
    """Prepend the samples' dimensions ``extra`` to ``owner.batch_shape`` (once), as for a module built batched."""
    shape = owner.__dict__.get("batch_shape")
    if not extra or not isinstance(shape, torch.Size):
        return
    if tuple(shape[: len(extra)]) != tuple(extra):
        owner.__dict__["batch_shape"] = torch.Size(extra) + shape
