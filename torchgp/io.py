r"""Saving and loading models without pickle: ``torchgp.save(model, path)`` / ``torchgp.load(path)``.

The file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file: every tensor
(parameters and buffers from ``state_dict``, the training data, extra arrays) plus a JSON header
in the string metadata. The header says how to rebuild models made of torchgp's own parts
(:class:`ExactGPModel`, the variational :class:`ApproximateGPModel`, sklearn and CLI models),
including their constraints and registered priors (class and parameters of :mod:`torchgp.priors`);
other model classes load into an instance you build: ``load(path, model=MyModel(...))``.
The fitted :mod:`torchgp.sklearn` estimators themselves are saved the same way: their parameters
and fitted attributes go into the JSON header, their torch parts into tensors, and ``load`` returns
the estimator (only those two estimator classes are ever rebuilt from a file).

A SHA-256 digest of the header and of every tensor's name, dtype, shape and bytes is stored
in the metadata and checked on load, so a file whose bytes or metadata were changed is refused.
Nothing in the file is ever executed (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any

import torch

from torchgp import constraints as _constraints
from torchgp import kernels as _kernels
from torchgp import likelihoods as _likelihoods
from torchgp import means as _means
from torchgp import priors as _priors
from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError, TorchGPError
from torchgp.kernels.parse import parse_kernel
from torchgp.models import ExactGP
from torchgp.module import _Getter, _Setter

__all__ = ["save", "load", "ModelFileError", "ExactGPModel", "model_spec", "build_model"]

FORMAT = "torchgp-model"
FORMAT_VERSION = 1


class ModelFileError(TorchGPError, ValueError):
    """A model file is unreadable, was modified after saving, or does not match the model given."""


# --------------------------------------------------------------------------- a model built from parts
class ExactGPModel(ExactGP):
    """Exact GP regression from a mean, a kernel and a Gaussian likelihood (no subclassing needed).

    Args:
        train_x: ``(*batch, n, d)`` (or ``(n,)``) training inputs.
        train_y: ``(*batch, n)`` training targets.
        likelihood: a Gaussian likelihood (default ``GaussianLikelihood(batch_shape=batch)``).
        kernel: a torchgp kernel or a kernel string (``"rbf + periodic"``, see :mod:`torchgp.kernels.parse`);
            strings get ARD lengthscales for the d input dimensions.
        mean: a torchgp mean, or ``"constant"`` / ``"zero"`` / ``"linear"``.
        batch_shape: batch of independent GPs (default: the leading dims of ``train_x``).

    Shapes:
        eval mode: ``model(X* (*batch, t, d))`` → ``MultivariateNormal`` ``(*batch, t)``.

    Example:
        >>> import torch
        >>> X = torch.linspace(0, 1, 10, dtype=torch.float64)
        >>> model = ExactGPModel(X, torch.sin(6 * X), kernel="matern52").double().eval()
        >>> model(torch.tensor([0.5], dtype=torch.float64)).mean.shape
        torch.Size([1])
    """

    def __init__(self, train_x, train_y, likelihood=None, kernel="rbf", mean="constant", batch_shape=None):
        x = train_x.unsqueeze(-1) if train_x.dim() == 1 else train_x
        batch = torch.Size(x.shape[:-2] if batch_shape is None else batch_shape)
        if likelihood is None:
            likelihood = _likelihoods.GaussianLikelihood(batch_shape=batch)
        super().__init__(train_x, train_y, likelihood)
        self.mean_module = _make_mean(mean, x.shape[-1], batch)
        self.covar_module = parse_kernel(kernel, ard_num_dims=x.shape[-1], batch_shape=batch)

    def forward(self, x):
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _make_mean(mean, d: int, batch: torch.Size):
    if isinstance(mean, torch.nn.Module):
        return mean
    makers = {
        "constant": lambda: _means.ConstantMean(batch_shape=batch),
        "zero": lambda: _means.ZeroMean(batch_shape=batch),
        "linear": lambda: _means.LinearMean(d, batch_shape=batch),
    }
    if mean not in makers:
        raise InputError(f"mean must be a torchgp Mean or one of {sorted(makers)}; got {mean!r}.")
    return makers[mean]()


def _approximate_gp_model_class():
    """The variational model class, built on first use (None if torchgp's variational part is missing).

    It is created lazily because :mod:`torchgp.models` gets ``ApproximateGP`` from another part of
    the library; ``torchgp.io.ApproximateGPModel`` resolves to it (module ``__getattr__``), so
    instances pickle by name.
    """
    global _APPROX_CLASS
    if _APPROX_CLASS is not None:
        return _APPROX_CLASS
    try:
        from torchgp.models import ApproximateGP
        from torchgp.variational import CholeskyVariationalDistribution, VariationalStrategy
    except ImportError:
        return None

    def __init__(self, inducing_points, kernel="rbf", mean="constant", learn_inducing_locations=True):
        Z = inducing_points.unsqueeze(-1) if inducing_points.dim() == 1 else inducing_points
        batch = Z.shape[:-2]
        q = CholeskyVariationalDistribution(Z.shape[-2], batch_shape=batch)
        strategy = VariationalStrategy(self, Z, q, learn_inducing_locations=learn_inducing_locations)
        ApproximateGP.__init__(self, strategy)
        self.mean_module = _make_mean(mean, Z.shape[-1], batch)
        self.covar_module = parse_kernel(kernel, ard_num_dims=Z.shape[-1], batch_shape=batch)

    def forward(self, x):
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))

    doc = """SVGP (Hensman et al. 2015) from inducing points, a kernel and a mean.

    Args:
        inducing_points: ``Z (*batch, m, d)`` (or ``(m,)``).
        kernel: a torchgp kernel or kernel string (ARD over d).
        mean: a torchgp mean or ``"constant"`` / ``"zero"`` / ``"linear"``.
        learn_inducing_locations: whether Z is trained.

    Shapes:
        ``model(X (*batch, n, d))`` → ``MultivariateNormal`` ``(*batch, n)`` (the approximate posterior q(f)).
    """
    _APPROX_CLASS = type(
        "ApproximateGPModel",
        (ApproximateGP,),
        {"__init__": __init__, "forward": forward, "__doc__": doc, "__module__": __name__},
    )
    return _APPROX_CLASS


_APPROX_CLASS = None


def __getattr__(name):
    if name == "ApproximateGPModel":
        cls = _approximate_gp_model_class()
        if cls is None:
            raise AttributeError(
                "torchgp.io.ApproximateGPModel needs torchgp.models.ApproximateGP and torchgp.variational, "
                "which this installation does not have."
            )
        return cls
    raise AttributeError(f"module 'torchgp.io' has no attribute {name!r}")


# --------------------------------------------------------------------------- specs: JSON descriptions
_LEAF_KERNELS = {
    "RBFKernel": (),
    "MaternKernel": ("nu",),
    "RQKernel": (),
    "PeriodicKernel": (),
    "CosineKernel": (),
    "LinearKernel": (),
    "PolynomialKernel": ("power",),
    "SpectralMixtureKernel": ("num_mixtures",),
}


def _kernel_spec(k) -> dict:
    name = type(k).__name__
    if getattr(_kernels, name, None) is not type(k):
        raise InputError(f"kernel class {name} is not one of torchgp's own; save/load needs model=... to rebuild it.")
    spec: dict[str, Any] = {"type": name, "batch_shape": list(k.batch_shape)}
    if k.active_dims is not None:
        spec["active_dims"] = k.active_dims.tolist()
    if name == "ScaleKernel":
        spec["base_kernel"] = _kernel_spec(k.base_kernel)
    elif name in ("AdditiveKernel", "ProductKernel"):
        spec["kernels"] = [_kernel_spec(c) for c in k.kernels]
    elif name in _LEAF_KERNELS:
        spec["ard_num_dims"] = k.ard_num_dims
        for attr in _LEAF_KERNELS[name]:
            spec[attr] = getattr(k, attr)
    else:
        raise InputError(f"kernel {name} cannot be described for saving; pass model=... to load().")
    return spec


def _kernel_from_spec(spec: dict):
    name = spec["type"]
    common = {"batch_shape": torch.Size(spec.get("batch_shape", []))}
    if spec.get("active_dims") is not None:
        common["active_dims"] = spec["active_dims"]
    if name == "ScaleKernel":
        return _kernels.ScaleKernel(_kernel_from_spec(spec["base_kernel"]), **common)
    if name in ("AdditiveKernel", "ProductKernel"):
        kernel = getattr(_kernels, name)(*(_kernel_from_spec(s) for s in spec["kernels"]))
        if common.get("active_dims") is not None:
            kernel.active_dims = torch.as_tensor(common["active_dims"], dtype=torch.long)
        return kernel
    if name not in _LEAF_KERNELS:
        raise ModelFileError(f"The model file names an unknown kernel {name!r}; it was written by another version.")
    extra = {attr: spec[attr] for attr in _LEAF_KERNELS[name]}
    if name == "SpectralMixtureKernel":
        extra["ard_num_dims"] = spec.get("ard_num_dims") or 1
    elif spec.get("ard_num_dims") is not None:
        extra["ard_num_dims"] = spec["ard_num_dims"]
    return getattr(_kernels, name)(**extra, **common)


def _mean_spec(m) -> dict:
    name = type(m).__name__
    if getattr(_means, name, None) is not type(m):
        raise InputError(f"mean class {name} is not one of torchgp's own; pass model=... to load().")
    spec = {"type": name, "batch_shape": list(getattr(m, "batch_shape", []))}
    if name == "LinearMean":
        spec["input_size"] = m.weights.shape[-2]
        spec["bias"] = m.bias is not None
    return spec


def _mean_from_spec(spec: dict):
    batch = torch.Size(spec.get("batch_shape", []))
    name = spec["type"]
    if name == "LinearMean":
        return _means.LinearMean(spec["input_size"], batch_shape=batch, bias=spec.get("bias", True))
    if name in ("ConstantMean", "ZeroMean"):
        return getattr(_means, name)(batch_shape=batch)
    raise ModelFileError(f"The model file names an unknown mean {name!r}.")


def _likelihood_spec(lik) -> dict:
    name = type(lik).__name__
    if name in ("GaussianLikelihood", "BernoulliLikelihood") and getattr(_likelihoods, name, None) is type(lik):
        return {"type": name, "batch_shape": list(getattr(lik, "batch_shape", []))}
    raise InputError(f"likelihood {name} cannot be rebuilt from a file; pass model=... to load().")


def _likelihood_from_spec(spec: dict):
    name = spec["type"]
    cls = getattr(_likelihoods, name, None)
    if cls is None:
        raise ModelFileError(f"The model file needs likelihood {name!r}, which this torchgp does not have.")
    batch = torch.Size(spec.get("batch_shape", []))
    return cls(batch_shape=batch) if name == "GaussianLikelihood" else cls()


def _constraint_specs(model) -> dict:
    """Every constraint of the model by dotted name: its class and bounds (custom transforms are refused)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, _constraints.Interval):
            if module._transform is not None or module._inv_transform is not None:
                raise InputError(
                    f"constraint {name} has a custom transform, which cannot be saved; pass model=... to load()."
                )
            if getattr(_constraints, type(module).__name__, None) is not type(module):
                raise InputError(f"constraint {name} is a custom class; pass model=... to load().")
            lo, hi = float(module.lower_bound.min()), float(module.upper_bound.max())
            out[name] = {"type": type(module).__name__, "lower": lo, "upper": hi, "initial_value": module.initial_value}
    return out


def _apply_constraints(model, specs: dict) -> None:
    for name, spec in specs.items():
        *path, leaf = name.split(".")
        parent = model
        for part in path:
            parent = getattr(parent, part)
        if not leaf.endswith("_constraint"):
            continue
        param = leaf[: -len("_constraint")]
        kind = spec["type"]
        if kind == "Positive":
            c = _constraints.Positive()
        elif kind == "GreaterThan":
            c = _constraints.GreaterThan(spec["lower"])
        elif kind == "LessThan":
            c = _constraints.LessThan(spec["upper"])
        elif kind == "Interval":
            c = _constraints.Interval(spec["lower"], spec["upper"])
        else:
            raise ModelFileError(f"The model file names an unknown constraint class {kind!r}.")
        parent.register_constraint(param, c)


def _prior_specs(model) -> dict:
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
                raise InputError(
                    f"prior {full} is a custom class {kind}, which cannot be saved; pass model=... to load()."
                )
            if prior._transform is not None:
                raise InputError(f"prior {full} has a transform, which cannot be saved; pass model=... to load().")
            if not isinstance(closure, _Getter) or not (setting is None or isinstance(setting, _Setter)):
                raise InputError(
                    f"prior {full} is on a custom closure, which cannot be saved; pass model=... to load()."
                )
            params = {b: buf.tolist() for b, buf in prior.named_buffers(recurse=False)}
            out[full] = {
                "type": kind,
                "params": params,
                "of": closure.name,
                "setter": None if setting is None else setting.name,
            }
    return out


def _apply_priors(model, specs: dict) -> None:
    for name, spec in specs.items():
        *path, leaf = name.split(".")
        parent = model
        for part in path:
            parent = getattr(parent, part)
        cls = getattr(_priors, spec["type"], None)
        if not (isinstance(cls, type) and issubclass(cls, _priors.Prior)):
            raise ModelFileError(f"The model file names an unknown prior class {spec['type']!r}.")
        prior = cls(**{k: torch.tensor(v, dtype=torch.float64) for k, v in spec["params"].items()})
        setter = _Setter(spec["setter"]) if spec.get("setter") else None
        parent.register_prior(leaf, prior, _Getter(spec["of"]), setter)


def model_spec(model) -> dict:
    """A JSON-able description from which :func:`build_model` rebuilds ``model``'s structure.

    Raises:
        InputError: the model (or a part of it) is not made of torchgp's own classes.
    """
    name = type(model).__name__
    if isinstance(model, _kernels.Kernel):
        return {
            "kind": "kernel",
            "kernel": _kernel_spec(model),
            "constraints": _constraint_specs(model),
            "priors": _prior_specs(model),
        }
    if isinstance(model, _likelihoods.Likelihood):
        return {
            "kind": "likelihood",
            "likelihood": _likelihood_spec(model),
            "constraints": _constraint_specs(model),
            "priors": _prior_specs(model),
        }
    if isinstance(model, ExactGPModel):
        kind = "exact"
    elif _APPROX_CLASS is not None and type(model) is _APPROX_CLASS:
        kind = "variational"
    else:
        raise InputError(
            f"{name} is not a model class torchgp can rebuild; load it with load(path, model={name}(...))."
        )
    spec = {
        "kind": kind,
        "mean": _mean_spec(model.mean_module),
        "kernel": _kernel_spec(model.covar_module),
        "constraints": _constraint_specs(model),
        "priors": _prior_specs(model),
    }
    if kind == "exact":
        spec["likelihood"] = _likelihood_spec(model.likelihood)
    else:
        strategy = model.variational_strategy
        spec["num_inducing"] = int(strategy.inducing_points.shape[-2])
        spec["learn_inducing_locations"] = bool(strategy.inducing_points.requires_grad)
    return spec


def build_model(spec: dict, train_inputs=None, train_targets=None, inducing_points=None):
    """Rebuild a model's structure from :func:`model_spec` (values come from ``load_state_dict`` after)."""
    kind = spec.get("kind")
    if kind == "kernel":
        model = _kernel_from_spec(spec["kernel"])
    elif kind == "likelihood":
        model = _likelihood_from_spec(spec["likelihood"])
    elif kind == "exact":
        if train_inputs is None:
            raise ModelFileError("The model file holds an exact GP but no training data; it is incomplete.")
        lik = _likelihood_from_spec(spec["likelihood"])
        model = ExactGPModel(
            train_inputs[0],
            train_targets,
            lik,
            kernel=_kernel_from_spec(spec["kernel"]),
            mean=_mean_from_spec(spec["mean"]),
        )
    elif kind == "variational":
        cls = _approximate_gp_model_class()
        if cls is None:
            raise ModelFileError("The model file holds a variational GP, but torchgp.variational is not available.")
        model = cls(
            inducing_points,
            kernel=_kernel_from_spec(spec["kernel"]),
            mean=_mean_from_spec(spec["mean"]),
            learn_inducing_locations=spec.get("learn_inducing_locations", True),
        )
    else:
        raise ModelFileError(f"The model file describes an unknown model kind {kind!r}.")
    _apply_constraints(model, spec.get("constraints", {}))
    _apply_priors(model, spec.get("priors", {}))
    return model


# --------------------------------------------------------------------------- file format
def _digest(header_json: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(header_json.encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def _pack(module, prefix: str, payload: dict[str, torch.Tensor]) -> dict:
    """Put ``module``'s state (and training data) into ``payload`` under ``prefix``; return its header entry."""
    for key, value in module.state_dict().items():
        payload[f"{prefix}state/{key}"] = value.detach().cpu().contiguous().clone()
    n_inputs = 0
    if getattr(module, "train_inputs", None) is not None:
        for i, x in enumerate(module.train_inputs):
            payload[f"{prefix}data/inputs/{i}"] = x.detach().cpu().contiguous().clone()
        n_inputs = len(module.train_inputs)
        payload[f"{prefix}data/targets"] = module.train_targets.detach().cpu().contiguous().clone()
    try:
        spec, spec_error = model_spec(module), None
    except InputError as err:
        spec, spec_error = None, str(err)
    return {
        "class": f"{type(module).__module__}.{type(module).__qualname__}",
        "spec": spec,
        "spec_error": spec_error,
        "n_inputs": n_inputs,
        "training": bool(module.training),
    }


def _unpack(entry: dict, tensors: dict[str, torch.Tensor], prefix: str, model=None):
    """Rebuild (or fill ``model`` with) the module that :func:`_pack` stored under ``prefix``."""
    state = {k[len(prefix) + len("state/") :]: v for k, v in tensors.items() if k.startswith(prefix + "state/")}
    inputs = tuple(tensors[f"{prefix}data/inputs/{i}"] for i in range(entry.get("n_inputs", 0)))
    targets = tensors.get(f"{prefix}data/targets")
    if model is None:
        if entry.get("spec") is None:
            raise ModelFileError(
                f"load: the file holds a {entry.get('class')}, which torchgp cannot rebuild by itself "
                f"({entry.get('spec_error')}). Build one and pass it: load(path, model=MyModel(...))."
            )
        inducing = state.get("variational_strategy.inducing_points")
        model = build_model(entry["spec"], inputs or None, targets, inducing)
    # the model's dtype is its parameters' (buffers such as a prior's may differ; they are restored below)
    params = [state[name] for name, _ in model.named_parameters() if name in state]
    dtype = next((v.dtype for v in params + list(state.values()) if v.is_floating_point()), None)
    if dtype is not None:
        model = model.to(dtype)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelFileError(
            f"load: the file's parameters do not fit the {type(model).__name__} given: {err}"
        ) from None
    # Buffers keep the dtype they were saved with (a float32 prior on a float64 model stays float32),
    # so that every computed value (the priors' log-densities included) is bit-identical.
    for key, buf in list(model.named_buffers()):
        saved = state.get(key)
        if saved is not None and saved.dtype != buf.dtype:
            *path, leaf = key.split(".")
            owner = model.get_submodule(".".join(path)) if path else model
            owner._buffers[leaf] = saved.to(buf.device).clone()
    if inputs and hasattr(model, "set_train_data"):
        model.set_train_data(inputs, targets, strict=False)
    model.train(entry.get("training", False))
    return model


#: scikit-learn estimators that save/load handle, by class name (nothing else is ever instantiated from a file).
_ESTIMATORS = ("GaussianProcessRegressor", "GaussianProcessClassifier")


def save(model, path, metadata: dict | None = None, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model`` (parameters, buffers, training data, structure, priors) to ``path``.

    Args:
        model: a torchgp model (exact, batch or variational), or a fitted :mod:`torchgp.sklearn`
            estimator. Models made of torchgp's parts (:class:`ExactGPModel`, ``ApproximateGPModel``,
            the sklearn and CLI models, with torchgp's constraints and priors) and the estimators are
            rebuilt by :func:`load` alone; other models need ``load(path, model=...)``.
        path: file to write (``.safetensors`` suggested).
        metadata: extra JSON-able information stored in the header (e.g. feature names, scalers).
        tensors: extra named tensors stored alongside.

    Raises:
        InputError: ``model`` is neither a torch module nor a torchgp estimator, the estimator is not
            fitted, or ``metadata`` is not JSON-able.
    """
    from safetensors.torch import save_file

    payload: dict[str, torch.Tensor] = {}
    header: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION}
    if isinstance(model, torch.nn.Module):
        header.update(_pack(model, "", payload))
    elif type(model).__name__ in _ESTIMATORS and hasattr(model, "_torchgp_file_state"):
        state, modules, arrays = model._torchgp_file_state()
        header["class"] = f"{type(model).__module__}.{type(model).__qualname__}"
        header["estimator"] = {
            "type": type(model).__name__,
            "state": state,
            "parts": {name: _pack(m, f"part/{name}/", payload) for name, m in modules.items()},
        }
        for key, value in arrays.items():
            payload[f"array/{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    else:
        raise InputError(
            f"save: expected a torchgp model (torch.nn.Module) or a fitted torchgp.sklearn estimator; "
            f"got {type(model).__name__}."
        )
    for key, value in (tensors or {}).items():
        payload[f"extra/{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    header["metadata"] = metadata or {}
    try:
        header_json = json.dumps(header, sort_keys=True, default=_jsonable)
    except TypeError as err:
        raise InputError(f"save: metadata must be JSON-serialisable (str, numbers, lists, dicts): {err}") from None
    save_file(payload, os.fspath(path), metadata={"torchgp": header_json, "sha256": _digest(header_json, payload)})


def _read(path):
    from safetensors import SafetensorError, safe_open

    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no model file at {os.fspath(path)!r}.")
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(
            f"load: {os.fspath(path)!r} is not a readable torchgp model file (damaged or not a safetensors file): {err}"
        ) from None
    if "torchgp" not in meta or "sha256" not in meta:
        raise ModelFileError(f"load: {os.fspath(path)!r} is a safetensors file but not one written by torchgp.save.")
    header_json = meta["torchgp"]
    if _digest(header_json, tensors) != meta["sha256"]:
        raise ModelFileError(
            f"load: {os.fspath(path)!r} was modified after it was saved (its SHA-256 digest does not match the "
            "contents); refusing to load it. Save the model again from its source."
        )
    header = json.loads(header_json)
    if header.get("format") != FORMAT or header.get("version", 0) > FORMAT_VERSION:
        raise ModelFileError(
            f"load: {os.fspath(path)!r} has format {header.get('format')} v{header.get('version')}, "
            f"not {FORMAT} v<={FORMAT_VERSION}; upgrade torchgp."
        )
    return header, tensors


def load(path, model=None, *, with_metadata: bool = False):
    """Read a model (or a scikit-learn estimator) written by :func:`save`; the file's integrity is checked first.

    Args:
        path: the file.
        model: an instance to load into (needed for model classes that are not torchgp's own);
            its parameters, buffers and training data are replaced by the file's.
        with_metadata: also return ``(metadata, extra_tensors)`` stored by ``save``.

    Returns:
        The model (in the train/eval mode it was saved in) or the fitted estimator, or
        ``(model, metadata, tensors)``.

    Raises:
        ModelFileError: the file is damaged or modified, or its parameters do not fit ``model``.
        FileNotFoundError: no such file.
    """
    header, tensors = _read(path)
    extra = {k[len("extra/") :]: v for k, v in tensors.items() if k.startswith("extra/")}
    if "estimator" in header:
        est = header["estimator"]
        if model is not None:
            raise InputError("load: the file holds a scikit-learn estimator; call load(path) without model=.")
        if est.get("type") not in _ESTIMATORS:
            raise ModelFileError(f"load: the file names an unknown estimator {est.get('type')!r}.")
        from torchgp import sklearn as _sklearn

        parts = {name: _unpack(entry, tensors, f"part/{name}/") for name, entry in est.get("parts", {}).items()}
        arrays = {k[len("array/") :]: v for k, v in tensors.items() if k.startswith("array/")}
        model = getattr(_sklearn, est["type"])._from_torchgp_file(est["state"], parts, arrays)
    else:
        model = _unpack(header, tensors, "", model)
    if with_metadata:
        return model, header.get("metadata", {}), extra
    return model
