"""The ``Module`` base: constrained hyperparameters, priors, dotted ``initialize``.

GPyTorch's public names are kept (``raw_lengthscale``, ``raw_lengthscale_constraint``,
``lengthscale``, ``register_prior``, ``named_priors``, ``initialize``), but declaring a
constrained hyperparameter takes one call::

    self.register_constrained("lengthscale", torch.ones(1, d), Positive(), prior=prior)

after which ``self.lengthscale`` reads the constrained value and ``self.lengthscale = v``
validates ``v`` (finite, inside the constraint) and writes the raw parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

from torchgp._fit_memo import fit_memo, fit_memoised, fit_scope  # noqa: F401  (documented here)
from torchgp.constraints import Interval
from torchgp.errors import InputError, ModelTypeError

# {id(raw): (raw, raw._version, grad mode, constraint, value)} inside ``reuse_constrained_values()``, else None
_CONSTRAINED_VALUES: ContextVar[dict | None] = ContextVar("torchgp_constrained_values", default=None)


@contextmanager
def reuse_constrained_values():
    """Within this context each constrained value (``module.lengthscale``) is computed once.

    One loss evaluation reads a hyperparameter more than once (the kernel, then its prior); inside this
    context the second read returns the first's tensor (one autograd node instead of two) as long as it is
    the same raw parameter, unchanged (same ``_version``), under the same constraint and grad mode. The
    values live only until the context ends, so nothing can go stale across evaluations.
    """
    token = _CONSTRAINED_VALUES.set({})
    try:
        yield
    finally:
        _CONSTRAINED_VALUES.reset(token)


class _Getter:
    """Picklable ``lambda m: getattr(m, name)``."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, module):
        return getattr(module, self.name)


class _Setter:
    """Picklable ``lambda m, v: setattr(m, name, v)``."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, module, value):
        setattr(module, self.name, value)


class Module(nn.Module):
    """Base of every torchgp kernel, mean, likelihood and model."""

    def __init__(self):
        super().__init__()
        object.__setattr__(self, "_constrained", {})  # public name -> raw parameter name
        self._prior_closures = {}  # prior name -> (closure, setting_closure)

    # ------------------------------------------------------------------ constrained params
    def register_parameter(self, name: str, parameter: nn.Parameter | None) -> None:
        """Add ``parameter`` as ``self.<name>`` (GPyTorch's signature: ``parameter=`` by keyword too)."""
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"register_parameter({name!r}) was called before Module.__init__(); call super().__init__() first."
            )
        super().register_parameter(name, parameter)

    def register_constrained(self, name: str, init, constraint: Interval, prior=None) -> None:
        """Register ``raw_<name>`` with ``constraint``; ``self.<name>`` is then the constrained value.

        Args:
            name: public name (``"lengthscale"``).
            init: initial constrained value; its shape is the parameter's shape.
            constraint: an :mod:`torchgp.constraints` object.
            prior: optional prior on the constrained value, registered as ``<name>_prior``.
        """
        init = torch.as_tensor(init, dtype=torch.get_default_dtype())
        if constraint.initial_value is not None:
            init = torch.full_like(init, float(constraint.initial_value))
        self._check_value(name, init, constraint)
        raw_name = f"raw_{name}"
        self.register_parameter(raw_name, nn.Parameter(constraint.inverse_transform(init).detach().clone()))
        self.register_constraint(raw_name, constraint)
        self._constrained[name] = raw_name
        if prior is not None:
            self.register_prior(f"{name}_prior", prior, _Getter(name), _Setter(name))

    def register_constraint(self, param_name: str, constraint: Interval, replace: bool = True) -> None:
        """Attach ``constraint`` to the raw parameter ``param_name`` (GPyTorch signature)."""
        if param_name not in self._parameters:
            raise AttributeError(f"register_constraint: {type(self).__name__} has no parameter {param_name!r}.")
        key = f"{param_name}_constraint"
        if key in self._modules and not replace:
            raise AttributeError(f"Constraint {key} already exists; pass replace=True.")
        self.add_module(key, constraint)
        if param_name.startswith("raw_"):
            self._constrained.setdefault(param_name[4:], param_name)

    def constraint_for_parameter_name(self, param_name: str):
        """The constraint on a (possibly dotted) raw parameter name, or None."""
        *path, leaf = param_name.split(".")
        module = self
        for part in path:
            module = getattr(module, part)
        return module._modules.get(f"{leaf}_constraint")

    def named_constraints(self):
        """Yield ``(name, constraint)`` for every constraint below this module (GPyTorch's name)."""
        for name, module in self.named_modules():
            if isinstance(module, Interval):
                yield name, module

    def constraints(self):
        for _, constraint in self.named_constraints():
            yield constraint

    def named_parameters_and_constraints(self):
        """Yield ``(name, parameter, constraint or None)`` for every parameter."""
        for name, param in self.named_parameters():
            yield name, param, self.constraint_for_parameter_name(name)

    @staticmethod
    def _check_value(name, value, constraint):
        if not torch.all(torch.isfinite(value)):
            raise InputError(f"{name} must be finite; got {value.tolist() if value.numel() < 10 else value}.")
        if not constraint.check(value):
            bad = value.detach().flatten()
            raise InputError(
                f"{name} must be {constraint.describe()} (its constraint {constraint!r}); got "
                f"{bad.tolist() if bad.numel() < 10 else f'min {bad.min().item():g}'}. "
                f"Pass a value inside the constraint, or register a different constraint."
            )

    def _set_constrained(self, name: str, value) -> None:
        if "_pyro_mode" in self.__dict__:  # a sampled copy, or loading samples (torchgp._pyro)
            from torchgp import _pyro

            return _pyro.assign_constrained(self, name, value)
        raw_name = self._constrained[name]
        raw = self._parameters[raw_name]
        constraint = self._modules[f"{raw_name}_constraint"]
        value = torch.as_tensor(value, dtype=raw.dtype, device=raw.device)
        self._check_value(name, value, constraint)
        new_raw = constraint.inverse_transform(value)
        try:
            new_raw = new_raw.expand_as(raw)
        except RuntimeError:
            raise InputError(
                f"{name} has shape {tuple(raw.shape)}; a value of shape {tuple(value.shape)} cannot be broadcast to it."
            ) from None
        with torch.no_grad():
            raw.copy_(new_raw)

    def __getattr__(self, name: str):
        constrained = self.__dict__.get("_constrained")
        if constrained and name in constrained:
            raw_name = constrained[name]
            raw = self._parameters.get(raw_name)
            if raw is None:  # a module made by pyro_sample_from_prior holds the raw value as a plain tensor
                raw = self.__dict__[raw_name]
            constraint = self._modules[f"{raw_name}_constraint"]
            values = _CONSTRAINED_VALUES.get()
            if values is None:
                return constraint.transform(raw)
            grad = torch.is_grad_enabled()
            hit = values.get(id(raw))
            if hit is not None and hit[0] is raw and hit[1] == raw._version and hit[2] == grad and hit[3] is constraint:
                return hit[4]
            value = constraint.transform(raw)
            values[id(raw)] = (raw, raw._version, grad, constraint, value)
            return value
        modules = self.__dict__.get("_modules")
        if modules is not None and name in modules:  # submodules are most lookups on the hot path
            return modules[name]
        buffers = self.__dict__.get("_buffers")  # then buffers (active_dims on every kernel call), without a frame
        if buffers is not None and name in buffers:
            return buffers[name]
        return super().__getattr__(name)

    def __setattr__(self, name: str, value) -> None:
        constrained = self.__dict__.get("_constrained")
        if constrained and name in constrained and not isinstance(value, nn.Parameter):
            self._set_constrained(name, value)
        elif "_pyro_mode" in self.__dict__ and name in self._parameters and not isinstance(value, nn.Parameter):
            from torchgp import _pyro

            _pyro.assign_raw(self, name, torch.as_tensor(value))
        else:
            super().__setattr__(name, value)

    # ------------------------------------------------------------------ initialize
    def initialize(self, **kwargs) -> Module:
        """Set hyperparameters by (dotted) name: ``initialize(**{"covar_module.outputscale": 2.0})``.

        Constrained names (``lengthscale``) take constrained values and are validated; raw names
        (``raw_lengthscale``) are copied as given (they must be finite).
        """
        for full_name, value in kwargs.items():
            *path, leaf = full_name.split(".")
            module = self
            for part in path:
                if not hasattr(module, part):
                    raise AttributeError(
                        f"initialize: {type(module).__name__} has no submodule {part!r} ({full_name})."
                    )
                module = getattr(module, part)
            if isinstance(module, Module) and leaf in module._constrained:
                module._set_constrained(leaf, value)
            elif "_pyro_mode" in module.__dict__ and leaf in module._parameters:
                setattr(module, leaf, torch.as_tensor(value))
            elif leaf in module._parameters:
                param = module._parameters[leaf]
                value = torch.as_tensor(value, dtype=param.dtype, device=param.device)
                if not torch.all(torch.isfinite(value)):
                    raise InputError(f"initialize: {full_name} must be finite; got {value}.")
                with torch.no_grad():
                    param.copy_(value.expand_as(param))
            elif hasattr(module, leaf):
                setattr(module, leaf, value)
            else:
                raise AttributeError(f"initialize: {type(module).__name__} has no attribute {leaf!r} ({full_name}).")
        return self

    # ------------------------------------------------------------------ priors
    def register_prior(self, name: str, prior, param_or_closure, setting_closure: Callable | None = None) -> None:
        """Add ``prior`` on a parameter (by name) or on ``closure(module)``; GPyTorch signature."""
        if isinstance(param_or_closure, str):
            if param_or_closure not in self._parameters and not hasattr(self, param_or_closure):
                raise AttributeError(f"register_prior: {type(self).__name__} has no parameter {param_or_closure!r}.")
            closure = _Getter(param_or_closure)
            settable = getattr(getattr(type(self), param_or_closure, None), "fset", None) is not None  # a property
            if setting_closure is None and (
                param_or_closure in self._parameters or param_or_closure in self._constrained or settable
            ):
                setting_closure = _Setter(param_or_closure)
        elif callable(param_or_closure):
            closure = param_or_closure
        else:
            raise TypeError("register_prior: param_or_closure must be a parameter name or a callable(module).")
        self.add_module(name, prior)
        self._prior_closures[name] = (closure, setting_closure)

    def named_priors(self, memo=None, prefix: str = "") -> Iterator:
        """Yield ``(name, module, prior, closure, setting_closure)`` for every prior below."""
        for mod_name, module in self.named_modules(prefix=prefix):
            if isinstance(module, Module):
                for name, (closure, setting) in module._prior_closures.items():
                    full = f"{mod_name}.{name}" if mod_name else name
                    yield full, module, module._modules[name], closure, setting

    def log_prior(self) -> torch.Tensor | float:
        """Σ over every registered prior of ``log p(closure(module))``."""
        total = 0.0
        for _, module, prior, closure, _ in self.named_priors():
            total = total + prior.log_prob(closure(module)).sum()
        return total

    def sample_from_prior(self, prior_name: str) -> None:
        """Set the parameter behind ``prior_name`` to a draw from that prior."""
        for name, module, prior, closure, setting in self.named_priors():
            if name == prior_name:
                if setting is None:
                    raise RuntimeError(f"Prior {prior_name} has no setting closure.")
                setting(
                    module,
                    prior.sample(closure(module).shape[: -len(prior.sample().shape) or None]).expand_as(
                        closure(module)
                    ),
                )
                return
        raise AttributeError(f"No prior named {prior_name!r}.")

    # ------------------------------------------------------------------ Pyro (optional: pip install torchgp[pyro])
    def pyro_sample_from_prior(self) -> Module:
        """A copy of this module whose prior'd hyperparameters are ``pyro.sample`` sites (GPyTorch's method).

        Each site is named ``<module path>.<prior name>`` (``covar_module.base_kernel.lengthscale_prior``) and
        drawn from the prior expanded to the hyperparameter's shape; the copy's outputs are differentiable
        functions of the sampled values, so it can be used inside a Pyro model run by NUTS/HMC or SVI.
        This module is left unchanged.
        """
        from torchgp import _pyro

        return _pyro.sample_from_prior(self)

    def pyro_load_from_samples(self, samples_dict: dict) -> None:
        """Load ``{prior name: samples (num_samples, *shape)}`` in place, making a batch of ``num_samples`` models.

        The keys are the site names of :meth:`pyro_sample_from_prior` (as ``pyro.infer.MCMC.get_samples()``
        returns them); each value is written through its prior's setting closure, so a hyperparameter of shape
        ``shape`` becomes ``(num_samples, *shape)``. In eval mode the model then predicts for the batch:
        inputs ``(num_samples, n*, d)`` give ``num_samples`` predictions, one per sample.
        """
        from torchgp import _pyro

        _pyro.load_from_samples(self, samples_dict)

    # ------------------------------------------------------------------ added loss terms
    def register_added_loss_term(self, name: str) -> None:
        """Declare an empty slot ``name`` for an :class:`~torchgp.mlls.AddedLossTerm` (GPyTorch signature)."""
        self.__dict__.setdefault("_added_loss_terms", {})[name] = None

    def update_added_loss_term(self, name: str, added_loss_term) -> None:
        """Put ``added_loss_term`` (an object with a ``loss()`` method) in the registered slot ``name``."""
        if not callable(getattr(added_loss_term, "loss", None)):
            raise ModelTypeError(
                f"update_added_loss_term({name!r}): expected an AddedLossTerm (an object with a loss() method); "
                f"got {type(added_loss_term).__name__}. Subclass torchgp.mlls.AddedLossTerm."
            )
        terms = self.__dict__.get("_added_loss_terms", {})
        if name not in terms:
            raise InputError(
                f"update_added_loss_term: {type(self).__name__} has no added loss term {name!r} (registered: "
                f"{sorted(terms)}). Call self.register_added_loss_term({name!r}) in __init__ first."
            )
        terms[name] = added_loss_term

    def named_added_loss_terms(self):
        """Yield ``(dotted name, term)`` for every filled added-loss-term slot below this module (each term once)."""
        seen = set()
        for prefix, module in self.named_modules():
            for name, term in module.__dict__.get("_added_loss_terms", {}).items():
                if term is not None and id(term) not in seen:
                    seen.add(id(term))
                    yield (f"{prefix}.{name}" if prefix else name), term

    def added_loss_terms(self):
        """Every filled :class:`~torchgp.mlls.AddedLossTerm` below this module (each once)."""
        # a plain walk, as in MarginalLogLikelihood._log_prior: named_modules() builds name strings on every step
        stack, seen_modules, seen_terms = [self], set(), set()
        while stack:
            module = stack.pop()
            if id(module) in seen_modules:
                continue
            seen_modules.add(id(module))
            for term in module.__dict__.get("_added_loss_terms", {}).values():
                if term is not None and id(term) not in seen_terms:
                    seen_terms.add(id(term))
                    yield term
            stack.extend(reversed([child for child in module._modules.values() if child is not None]))

    # ------------------------------------------------------------------ views
    def named_hyperparameters(self):
        """Parameters that are not variational parameters (GPyTorch: all but those of variational distributions)."""
        for prefix, module in self.named_modules():
            if not getattr(module, "_is_variational_distribution", False):
                yield from module.named_parameters(prefix=prefix, recurse=False)

    def hyperparameters(self):
        for _, param in self.named_hyperparameters():
            yield param

    def named_variational_parameters(self):
        """Parameters of variational distributions (``q(u)``); inducing points are hyperparameters, as in GPyTorch."""
        for prefix, module in self.named_modules():
            if getattr(module, "_is_variational_distribution", False):
                yield from module.named_parameters(prefix=prefix, recurse=False)

    def variational_parameters(self):
        for _, param in self.named_variational_parameters():
            yield param

    def non_finite_parameters(self) -> list[str]:
        """Names of parameters holding NaN or ±inf (used to name the culprit of a bad loss)."""
        return [name for name, p in self.named_parameters() if not torch.all(torch.isfinite(p.detach()))]
