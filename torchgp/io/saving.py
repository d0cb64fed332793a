r"""``save(model, path)`` / ``load(path)``: a model's state, training data and spec in one model file.

What goes where: tensors (``state_dict`` entries, training data, extra arrays) into the file's
payload under ``state/``, ``data/``, ``extra/`` (and ``part/<name>/`` for the parts of an estimator);
the JSON header (:mod:`torchgp.io.format`) holds the model's spec (:mod:`torchgp.io.specs`), its
train/eval mode and the user's metadata. Fitted scikit-learn estimators are saved by their own
``_torchgp_file_state()`` and rebuilt by their class's ``_from_torchgp_file``; only the classes in
:data:`ESTIMATORS` are ever rebuilt from a file, imported by name when a file needs them.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import torch

from torchgp.errors import InputError
from torchgp.io.format import ModelFileError, read_file, write_file
from torchgp.io.specs import build_model, model_spec

__all__ = ["ESTIMATORS", "save", "load"]

#: scikit-learn estimators that save/load handle: class name → module (nothing else is instantiated from a file)
ESTIMATORS = {"GaussianProcessRegressor": "torchgp.sklearn", "GaussianProcessClassifier": "torchgp.sklearn"}


def _cpu(t) -> torch.Tensor:
    return torch.as_tensor(t).detach().cpu().contiguous().clone()


def _pack(module, prefix: str, payload: dict[str, torch.Tensor]) -> dict:
    """Put ``module``'s state (and training data) into ``payload`` under ``prefix``; return its header entry."""
    for key, value in module.state_dict().items():
        payload[f"{prefix}state/{key}"] = _cpu(value)
    n_inputs = 0
    if getattr(module, "train_inputs", None) is not None:
        for i, x in enumerate(module.train_inputs):
            payload[f"{prefix}data/inputs/{i}"] = _cpu(x)
        n_inputs = len(module.train_inputs)
        payload[f"{prefix}data/targets"] = _cpu(module.train_targets)
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


def _restore_buffers(model, state: dict) -> None:
    """Buffers keep the dtype they were saved with (a float32 prior on a float64 model stays float32),
    so that every computed value (the priors' log-densities included) is bit-identical."""
    for key, buf in list(model.named_buffers()):
        saved = state.get(key)
        if saved is not None and saved.dtype != buf.dtype:
            *path, leaf = key.split(".")
            owner = model.get_submodule(".".join(path)) if path else model
            owner._buffers[leaf] = saved.to(buf.device).clone()


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
        model = build_model(entry["spec"], inputs or None, targets, state=state)
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
    _restore_buffers(model, state)
    if inputs and hasattr(model, "set_train_data"):
        model.set_train_data(inputs, targets, strict=False)
    model.train(entry.get("training", False))
    return model


def _is_estimator(obj) -> bool:
    """Whether ``obj`` is one of the :data:`ESTIMATORS` (whose module is then imported already)."""
    module = sys.modules.get(ESTIMATORS.get(type(obj).__name__, ""))
    return module is not None and getattr(module, type(obj).__name__, None) is type(obj)


def save(model, path, metadata: dict | None = None, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model`` (parameters, buffers, training data, structure, priors) to ``path``.

    Args:
        model: a torchgp model (exact, batch or variational), or a fitted :mod:`torchgp.sklearn`
            estimator. Models made of torchgp's parts (:class:`~torchgp.models.builders.ExactGPModel`,
            :class:`~torchgp.models.builders.ApproximateGPModel`, with torchgp's kernels, means,
            likelihoods, constraints and priors) and the estimators are rebuilt by :func:`load`
            alone; other models need ``load(path, model=...)``.
        path: file to write (``.safetensors`` suggested).
        metadata: extra JSON-able information stored in the header (e.g. feature names, scalers).
        tensors: extra named tensors stored alongside.

    Raises:
        InputError: ``model`` is neither a torch module nor a torchgp estimator, the estimator is not
            fitted, or ``metadata`` is not JSON-able.

    Example:
        >>> import tempfile, os, torch, torchgp
        >>> from torchgp.models.builders import ExactGPModel
        >>> X = torch.linspace(0, 1, 8, dtype=torch.float64)
        >>> model = ExactGPModel(X, X.sin(), kernel="rbf").double().eval()
        >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> torchgp.save(model, path)
        >>> type(torchgp.load(path)).__name__
        'ExactGPModel'
    """
    payload: dict[str, torch.Tensor] = {}
    header: dict[str, Any] = {}
    if isinstance(model, torch.nn.Module):
        header.update(_pack(model, "", payload))
    elif _is_estimator(model):
        state, modules, arrays = model._torchgp_file_state()
        header["class"] = f"{type(model).__module__}.{type(model).__qualname__}"
        header["estimator"] = {
            "type": type(model).__name__,
            "state": state,
            "parts": {name: _pack(m, f"part/{name}/", payload) for name, m in modules.items()},
        }
        for key, value in arrays.items():
            payload[f"array/{key}"] = _cpu(value)
    else:
        raise InputError(
            f"save: expected a torchgp model (torch.nn.Module) or a fitted torchgp.sklearn estimator; "
            f"got {type(model).__name__}."
        )
    for key, value in (tensors or {}).items():
        payload[f"extra/{key}"] = _cpu(value)
    header["metadata"] = metadata or {}
    write_file(path, header, payload)


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
    header, tensors = read_file(path)
    extra = {k[len("extra/") :]: v for k, v in tensors.items() if k.startswith("extra/")}
    if "estimator" in header:
        est = header["estimator"]
        if model is not None:
            raise InputError("load: the file holds a scikit-learn estimator; call load(path) without model=.")
        if est.get("type") not in ESTIMATORS:
            raise ModelFileError(f"load: the file names an unknown estimator {est.get('type')!r}.")
        cls = getattr(importlib.import_module(ESTIMATORS[est["type"]]), est["type"])
        parts = {name: _unpack(entry, tensors, f"part/{name}/") for name, entry in est.get("parts", {}).items()}
        arrays = {k[len("array/") :]: v for k, v in tensors.items() if k.startswith("array/")}
        model = cls._from_torchgp_file(est["state"], parts, arrays)
    else:
        model = _unpack(header, tensors, "", model)
    if with_metadata:
        return model, header.get("metadata", {}), extra
    return model
