r"""JSON descriptions ("specs") from which a model's structure is rebuilt; its values come from the state after.

A part (kernel, mean, likelihood) is described by its class name and its constructor arguments, read
the way scikit-learn's ``get_params`` reads them: each argument of the class's ``__init__`` (and of
its bases', through ``**kwargs``) is the attribute of the same name. A class whose state does not
follow that convention states its arguments itself with ``_spec(self) -> dict`` (values may be
modules, described in turn) and, if ``cls(**args)`` does not rebuild it, ``_from_spec(cls, args)``.
Priors and constraints are described apart (by the dotted name of their module), so ``*_prior`` and
``*_constraint`` arguments are skipped. Every spec is rebuilt once when it is written and its
parameters compared with the original's, so a class whose arguments cannot be read is refused at
``save`` time (with ``load(path, model=...)`` as the way out), never rebuilt wrong.

Only classes that torchgp exports by name are rebuilt: the parts in :data:`PART_NAMESPACES` and the
models in :data:`MODELS`. Nothing else named in a file is ever instantiated.

The schema (v1) is unchanged since the first model files, which load as they are.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from torch import nn

from torchgp import constraints as _constraints
from torchgp import priors as _priors
from torchgp.errors import InputError
from torchgp.io.format import ModelFileError
from torchgp.module import _Getter, _Setter

__all__ = ["PART_NAMESPACES", "MODELS", "describe", "rebuild", "model_spec", "build_model"]

#: where the parts that may be rebuilt from a file live (a class must be exported there by name)
PART_NAMESPACES = ("torchgp.kernels", "torchgp.means", "torchgp.likelihoods")

#: the model classes that may be rebuilt from a file: spec ``kind`` → ``"module:Class"``
MODELS = {
    "exact": "torchgp.models.builders:ExactGPModel",
    "variational": "torchgp.models.builders:ApproximateGPModel",
    "multitask": "torchgp.models.builders:MultitaskExactGPModel",
    "independent_multitask": "torchgp.models.builders:IndependentMultitaskGPModel",
    "hadamard": "torchgp.models.builders:HadamardGPModel",
}

_P = inspect.Parameter


def _import(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _own_part(name: str):
    """The class torchgp exports as ``name`` in one of :data:`PART_NAMESPACES`, else None."""
    for namespace in PART_NAMESPACES:
        cls = getattr(importlib.import_module(namespace), name, None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls
    return None


def _constructor_parameters(cls) -> tuple[dict[str, inspect.Parameter], str | None]:
    """Named ``__init__`` arguments of ``cls``, following ``**kwargs`` into its bases; and its ``*args`` name."""
    out: dict[str, inspect.Parameter] = {}
    var_positional = None
    for klass in cls.__mro__:
        if klass in (nn.Module, object):
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        forwards = False
        for p in list(inspect.signature(init).parameters.values())[1:]:
            if p.kind is _P.VAR_KEYWORD:
                forwards = True
            elif p.kind is _P.VAR_POSITIONAL:
                var_positional = var_positional or p.name
            else:
                out.setdefault(p.name, p)
        if not forwards:
            break
    return out, var_positional


def _skipped(name: str) -> bool:
    return name == "prior" or name.endswith(("_prior", "_constraint"))


def _attribute_arguments(module) -> dict[str, Any]:
    """Constructor arguments read from the attributes of the same name (scikit-learn's convention)."""
    params, var_positional = _constructor_parameters(type(module))
    args: dict[str, Any] = {}
    for name, p in params.items():
        if _skipped(name):
            continue
        if not hasattr(module, name):
            if p.default is _P.empty:
                raise InputError(
                    f"{type(module).__name__} keeps no attribute {name!r} for its constructor argument of that name"
                )
            continue
        args[name] = getattr(module, name)
    if var_positional is not None:
        args[var_positional] = list(getattr(module, var_positional))
    return args


def _declared_linear_mean(m) -> dict:
    return {"input_size": int(m.weights.shape[-2]), "batch_shape": m.batch_shape, "bias": m.bias is not None}


def _declared_multitask_kernel(k) -> dict:
    # the rank lives in the task kernel's factor W (num_tasks, rank)
    return {
        "data_covar_module": k.data_covar_module,
        "num_tasks": int(k.num_tasks),
        "rank": int(k.task_covar_module.covar_factor.shape[-1]),
        "batch_shape": k.batch_shape,
    }


def _declared_lcm_kernel(k) -> dict:
    parts = list(k.covar_module_list)
    return {
        "base_kernels": [m.data_covar_module for m in parts],
        "num_tasks": int(k.num_tasks),
        "rank": [int(m.task_covar_module.covar_factor.shape[-1]) for m in parts],
    }


def _declared_index_kernel(k) -> dict:
    args = {"num_tasks": int(k.num_tasks), "rank": int(k.covar_factor.shape[-1]), "batch_shape": k.batch_shape}
    if torch.is_tensor(getattr(k, "active_dims", None)):
        args["active_dims"] = k.active_dims.tolist()
    return args


#: parts whose attributes do not hold their constructor arguments, until the class states ``_spec`` itself
_DECLARED = {
    "IndexKernel": _declared_index_kernel,
    "LinearMean": _declared_linear_mean,
    "MultitaskKernel": _declared_multitask_kernel,
    "LCMKernel": _declared_lcm_kernel,
}


def _encode(value, where: str):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Size):
        return list(value)
    if torch.is_tensor(value) and not value.is_floating_point() and not value.requires_grad:
        return value.tolist()
    if isinstance(value, nn.Module) and not isinstance(value, (nn.ModuleList, _constraints.Interval, _priors.Prior)):
        return describe(value, where, check=False)
    if isinstance(value, (list, tuple, nn.ModuleList)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise InputError(f"{where} is a {type(value).__name__}, which a model file cannot describe")


def describe(module, where: str = "model", check: bool = True) -> dict:
    """``{"type": class name, argument: JSON value, ...}`` for a part torchgp exports by name.

    Args:
        module: a kernel, mean or likelihood (parts nested in its arguments are described in turn).
        where: the part's name, for messages.
        check: rebuild the spec and compare the parameters' names and shapes with ``module``'s.

    Raises:
        InputError: the class is not torchgp's own, or its arguments cannot be read or rebuilt.
    """
    cls = type(module)
    if _own_part(cls.__name__) is not cls:
        raise InputError(
            f"{where} is a {cls.__module__}.{cls.__name__}, not one of the classes a model file rebuilds "
            f"(those exported by name in {', '.join(PART_NAMESPACES)})"
        )
    if hasattr(module, "_spec"):
        args = module._spec()
    elif cls.__name__ in _DECLARED:
        args = _DECLARED[cls.__name__](module)
    else:
        args = _attribute_arguments(module)
    spec: dict[str, Any] = {"type": cls.__name__}
    for name, value in args.items():
        spec[name] = _encode(value, f"{where}.{name}")
    active = getattr(module, "active_dims", None)
    if "active_dims" not in spec and torch.is_tensor(active):
        spec["active_dims"] = active.tolist()
    if check:
        _check_rebuilds(module, spec, where)
    return spec


def _check_rebuilds(module, spec: dict, where: str) -> None:
    try:
        rebuilt = rebuild(spec, where)
    except (ModelFileError, TypeError, ValueError) as err:
        raise InputError(f"{where} ({spec['type']}) cannot be rebuilt from its constructor arguments: {err}") from None
    shapes, again = _state_shapes(module), _state_shapes(rebuilt)
    if shapes != again:
        diff = sorted(set(shapes.items()) ^ set(again.items()))[:4]
        raise InputError(
            f"{where} ({spec['type']}) rebuilt from its constructor arguments has other parameters ({diff})"
        )


def _state_shapes(module) -> dict[str, tuple]:
    """Names and shapes of the state entries a spec must reproduce (priors are registered apart)."""
    priors = tuple(f"{name}." for name, m in module.named_modules() if isinstance(m, _priors.Prior))
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.startswith(priors)}


def _decode(value):
    if isinstance(value, dict) and "type" in value:
        return rebuild(value)
    if isinstance(value, list) and value and all(isinstance(v, dict) and "type" in v for v in value):
        return [rebuild(v) for v in value]
    return value


def rebuild(spec: dict, where: str = "model"):
    """The part :func:`describe` described (fresh parameter values; the state is loaded after).

    Raises:
        ModelFileError: the spec names a class torchgp does not export, or an argument it does not take.
    """
    cls = _own_part(str(spec.get("type")))
    if cls is None:
        raise ModelFileError(f"The model file names an unknown part {spec.get('type')!r} at {where}.")
    params, var_positional = _constructor_parameters(cls)
    args = {k: _decode(v) for k, v in spec.items() if k != "type"}
    positional = args.pop(var_positional, []) if var_positional else []
    if "batch_shape" in args:
        args["batch_shape"] = torch.Size(args["batch_shape"])
    late_active = None
    for name in list(args):
        p = params.get(name)
        if p is None:
            value = args.pop(name)
            if name == "active_dims":  # a kernel that does not take active_dims keeps them as an attribute
                late_active = value
            elif name != "batch_shape":  # a combination of kernels takes its batch from its parts
                raise ModelFileError(f"The model file gives {cls.__name__} at {where} an unknown argument {name!r}.")
        elif args[name] is None and p.default is not _P.empty and p.default is not None:
            args.pop(name)  # None stands for the default
    module = cls._from_spec(args) if hasattr(cls, "_from_spec") else cls(*positional, **args)
    if late_active is not None:
        module.active_dims = torch.as_tensor(late_active, dtype=torch.long)
    return module


# --------------------------------------------------------------------------- constraints and priors
def constraint_specs(model) -> dict:
    """Every constraint of the model by dotted name: its class and bounds (custom transforms are refused)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, _constraints.Interval):
            if module._transform is not None or module._inv_transform is not None:
                raise InputError(f"constraint {name} has a custom transform, which cannot be saved")
            if getattr(_constraints, type(module).__name__, None) is not type(module):
                raise InputError(f"constraint {name} is a custom class")
            lo, hi = float(module.lower_bound.min()), float(module.upper_bound.max())
            out[name] = {"type": type(module).__name__, "lower": lo, "upper": hi, "initial_value": module.initial_value}
    return out


def apply_constraints(model, specs: dict) -> None:
    """Register the constraints :func:`constraint_specs` described on a rebuilt ``model``."""
    makers = {
        "Positive": lambda s: _constraints.Positive(),
        "GreaterThan": lambda s: _constraints.GreaterThan(s["lower"]),
        "LessThan": lambda s: _constraints.LessThan(s["upper"]),
        "Interval": lambda s: _constraints.Interval(s["lower"], s["upper"]),
    }
    for name, spec in specs.items():
        *path, leaf = name.split(".")
        if not leaf.endswith("_constraint"):
            continue
        if spec["type"] not in makers:
            raise ModelFileError(f"The model file names an unknown constraint class {spec['type']!r}.")
        parent = model.get_submodule(".".join(path)) if path else model
        parent.register_constraint(leaf[: -len("_constraint")], makers[spec["type"]](spec))


def prior_specs(model) -> dict:
    """Every registered prior by dotted name: its class, its parameters and the hyperparameter it is on.

    Only torchgp's own prior classes (:mod:`torchgp.priors`) without a transform, registered on a named
    (constrained) parameter, can be described; anything else is refused (pass ``model=...`` to load).
    """
    out = {}
    for mod_name, module in model.named_modules():
        for name, (closure, setting) in getattr(module, "_prior_closures", {}).items():
            full = f"{mod_name}.{name}" if mod_name else name
            prior = module._modules[name]
            kind = type(prior).__name__
            if getattr(_priors, kind, None) is not type(prior):
                raise InputError(f"prior {full} is a custom class {kind}, which cannot be saved")
            if prior._transform is not None:
                raise InputError(f"prior {full} has a transform, which cannot be saved")
            if not isinstance(closure, _Getter) or not (setting is None or isinstance(setting, _Setter)):
                raise InputError(f"prior {full} is on a custom closure, which cannot be saved")
            params = {b: buf.tolist() for b, buf in prior.named_buffers(recurse=False)}
            out[full] = {"type": kind, "params": params, "of": closure.name, "setter": getattr(setting, "name", None)}
    return out


def apply_priors(model, specs: dict) -> None:
    """Register the priors :func:`prior_specs` described on a rebuilt ``model``."""
    for name, spec in specs.items():
        *path, leaf = name.split(".")
        parent = model.get_submodule(".".join(path)) if path else model
        cls = getattr(_priors, spec["type"], None)
        if not (isinstance(cls, type) and issubclass(cls, _priors.Prior)):
            raise ModelFileError(f"The model file names an unknown prior class {spec['type']!r}.")
        prior = cls(**{k: torch.tensor(v, dtype=torch.float64) for k, v in spec["params"].items()})
        setter = _Setter(spec["setter"]) if spec.get("setter") else None
        parent.register_prior(leaf, prior, _Getter(spec["of"]), setter)


# --------------------------------------------------------------------------- whole models
def _model_kind(model) -> str | None:
    for kind, path in MODELS.items():
        if type(model) is _import(path):
            return kind
    return None


def model_spec(model) -> dict:
    """A JSON-able description from which :func:`build_model` rebuilds ``model``'s structure.

    ``model`` is a model class of :data:`MODELS`, or a bare kernel or likelihood.

    Raises:
        InputError: the model (or a part of it) is not made of torchgp's own classes.
    """
    from torchgp.kernels import Kernel
    from torchgp.likelihoods import Likelihood

    name = type(model).__name__
    fix = f"; load it with load(path, model={name}(...))."
    try:
        if isinstance(model, (Kernel, Likelihood)):
            key = "kernel" if isinstance(model, Kernel) else "likelihood"
            spec = {"kind": key, key: describe(model, key)}
        else:
            kind = _model_kind(model)
            if kind is None:
                raise InputError(f"{name} is not a model class torchgp can rebuild")
            spec = {"kind": kind}
            for arg, value in model._spec().items():
                spec[arg] = describe(value, arg) if isinstance(value, nn.Module) else _encode(value, arg)
        spec["constraints"] = constraint_specs(model)
        spec["priors"] = prior_specs(model)
    except InputError as err:
        raise InputError(f"{err}{fix}") from None
    return spec


def build_model(spec: dict, train_inputs=None, train_targets=None, inducing_points=None, state=None):
    """Rebuild a model's structure from :func:`model_spec` (values come from ``load_state_dict`` after).

    Args:
        spec: the description.
        train_inputs: ``tuple`` of ``(*batch, n, d)`` training inputs (exact GPs).
        train_targets: ``(*batch, n)`` training targets.
        inducing_points: ``Z (*batch, m, d)`` (variational GPs; else taken from ``state``).
        state: the stored ``state_dict``, for arguments that live there.

    Raises:
        ModelFileError: the spec names a model kind or a part torchgp does not have, or lacks data.
    """
    kind = spec.get("kind")
    if kind in ("kernel", "likelihood"):
        model = rebuild(spec[kind], kind)
    elif kind in MODELS:
        cls = _import(MODELS[kind])
        args = {k: _decode(v) for k, v in spec.items() if k not in ("kind", "constraints", "priors")}
        state = dict(state or {})
        if inducing_points is not None:
            state["variational_strategy.inducing_points"] = inducing_points
        try:
            model = cls._from_spec(args, train_inputs=train_inputs, train_targets=train_targets, state=state)
        except InputError as err:
            raise ModelFileError(f"The model file is incomplete: {err}") from None
    else:
        raise ModelFileError(f"The model file describes an unknown model kind {kind!r}.")
    apply_constraints(model, spec.get("constraints", {}))
    apply_priors(model, spec.get("priors", {}))
    return model
