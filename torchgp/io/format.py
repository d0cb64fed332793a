r"""The torchgp model file: a safetensors file, a JSON header and a SHA-256 digest.

Every tensor goes into the `safetensors <https://huggingface.co/docs/safetensors>`_ payload; the
string metadata holds two entries: ``"torchgp"``, the JSON header (format name and version, what the
file holds, user metadata), and ``"sha256"``, a digest of the header and of every tensor's name,
dtype, shape and bytes. :func:`read_file` checks the digest before anything else, so a file whose
bytes or metadata were changed after saving is refused. Nothing in the file is ever executed
(no pickle). What the header describes (models and their parts) is :mod:`torchgp.io.specs`' job.
"""

from __future__ import annotations

import hashlib
import json
import math
import os

import torch

from torchgp.errors import InputError, TorchGPError

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFileError", "digest", "write_file", "read_file"]

FORMAT = "torchgp-model"
FORMAT_VERSION = 1


class ModelFileError(TorchGPError, ValueError):
    """A model file is unreadable, was modified after saving, or does not match the model given."""


def digest(header_json: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the header and, in name order, every tensor's name, dtype, shape and bytes."""
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


def write_file(path, header: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` (CPU, contiguous) and the JSON ``header`` (format and version added) to ``path``.

    Raises:
        InputError: the header (with the user's metadata in it) is not JSON-serialisable.
    """
    from safetensors.torch import save_file

    header = {"format": FORMAT, "version": FORMAT_VERSION, **header}
    try:
        header_json = json.dumps(header, sort_keys=True, default=_jsonable)
    except TypeError as err:
        raise InputError(f"save: metadata must be JSON-serialisable (str, numbers, lists, dicts): {err}") from None
    save_file(tensors, os.fspath(path), metadata={"torchgp": header_json, "sha256": digest(header_json, tensors)})


def read_file(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(header, tensors)`` of a file written by :func:`write_file`, after checking its digest and version.

    Raises:
        FileNotFoundError: no such file.
        ModelFileError: not a safetensors file, not torchgp's, modified after saving, or from a newer format.
    """
    from safetensors import SafetensorError, safe_open

    where = repr(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no model file at {where}.")
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(
            f"load: {where} is not a readable torchgp model file (damaged or not a safetensors file): {err}"
        ) from None
    if "torchgp" not in meta or "sha256" not in meta:
        raise ModelFileError(f"load: {where} is a safetensors file but not one written by torchgp.save.")
    header_json = meta["torchgp"]
    if digest(header_json, tensors) != meta["sha256"]:
        raise ModelFileError(
            f"load: {where} was modified after it was saved (its SHA-256 digest does not match the "
            "contents); refusing to load it. Save the model again from its source."
        )
    header = json.loads(header_json)
    if header.get("format") != FORMAT or header.get("version", 0) > FORMAT_VERSION:
        raise ModelFileError(
            f"load: {where} has format {header.get('format')} v{header.get('version')}, "
            f"not {FORMAT} v<={FORMAT_VERSION}; upgrade torchgp."
        )
    return header, tensors
