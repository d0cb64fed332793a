"""Indexing a batch of kernels, ``kernel[i]``: the index applied to the batch dimensions of every tensor.

A kernel of ``batch_shape`` ``B`` holds hyperparameters and buffers of shape ``(*B, *event)``; indexing
the batch with ``key`` maps each to ``t[key]`` ``(*B', *event)`` with ``B' = empty(B)[key].shape``
(integers drop a dimension, slices and index lists keep one, ``...`` fills the rest, ``None`` adds one).
Constraint bounds of shape ``(*B, ...)`` are indexed the same way; scalar bounds and tensors without the
batch as leading dimensions (``active_dims``) are left as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from torchgp.constraints import Interval
from torchgp.errors import ShapeError


def _on(key: tuple, device: torch.device) -> tuple:
    return tuple(k.to(device) if isinstance(k, torch.Tensor) else k for k in key)


def _consumes(k) -> int:
    """How many batch dimensions one index entry consumes."""
    if k is None or k is Ellipsis:
        return 0
    if isinstance(k, torch.Tensor) and k.dtype == torch.bool:
        return k.dim()
    return 1


def batch_key(batch_shape: torch.Size, index) -> tuple[tuple, torch.Size]:
    """``(key, new batch shape)``: ``index`` on the batch dimensions, spelled out for tensors ``(*batch, *event)``.

    ``key`` indexes the leading ``len(batch_shape)`` dimensions of a tensor and no trailing one.

    Raises:
        IndexError: more index entries than batch dimensions, several ``...``, or an index out of range.
    """
    key = index if isinstance(index, tuple) else (index,)
    ellipses = [i for i, k in enumerate(key) if k is Ellipsis]
    used = sum(_consumes(k) for k in key)
    if len(ellipses) > 1:
        raise IndexError(f"a kernel's batch index may hold one '...'; got {index!r}.")
    if used > len(batch_shape):
        raise IndexError(
            f"index {index!r} has {used} entries but the kernel's batch_shape {tuple(batch_shape)} has "
            f"{len(batch_shape)} dimensions: a kernel is indexed on its batch dimensions only."
        )
    fill = (slice(None),) * (len(batch_shape) - used)
    if ellipses:
        i = ellipses[0]
        key = key[:i] + fill + key[i + 1 :]
    else:
        key = key + fill
    new_shape = torch.empty(batch_shape)[_on(key, torch.device("cpu"))].shape
    return key, new_shape


def _batched(t: torch.Tensor, batch: torch.Size) -> bool:
    return t.dim() >= len(batch) and t.shape[: len(batch)] == batch


def index_tensors_(module: nn.Module, key: tuple, batch: torch.Size, is_kernel, skip: tuple[str, ...] = ()) -> None:
    """In place: ``t ← t[key]`` (a copy) for ``module``'s parameters and buffers of leading shape ``batch``.

    Recurses into constraints and module containers; children for which ``is_kernel(child)`` holds are
    left to the caller (each indexes its own tensors). Parameters stay leaves with their ``requires_grad``.
    """
    for name, p in list(module._parameters.items()):
        if p is not None and name not in skip and _batched(p, batch):
            module._parameters[name] = nn.Parameter(p.detach()[_on(key, p.device)].clone(), p.requires_grad)
    for name, b in list(module._buffers.items()):
        if b is not None and name not in skip and _batched(b, batch):
            module._buffers[name] = b[_on(key, b.device)].clone()
    for child in module.children():
        if not is_kernel(child) and isinstance(child, (Interval, nn.ModuleList, nn.ModuleDict)):
            index_tensors_(child, key, batch, is_kernel)


def sub_kernels(module: nn.Module, is_kernel):
    """The kernels directly under ``module``, looking through module containers (``ModuleList``)."""
    for child in module.children():
        if is_kernel(child):
            yield child
        elif isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            yield from sub_kernels(child, is_kernel)


def index_kernel_(kernel: nn.Module, key: tuple, batch: torch.Size, new_batch: torch.Size, kernel_cls) -> None:
    """In place: ``kernel`` (a copy) and its sub-kernels indexed by ``key`` on their leading dimensions ``batch``.

    ``kernel``'s own batch shape is ``(*batch, *rest)`` (``rest`` empty but for sub-kernels holding one more
    batch dimension, as per-dimension kernels do) and becomes ``(*new_batch, *rest)``. Sub-kernels without a
    batch shape are left as they are; ``kernel_cls`` is the kernel base class.

    Raises:
        ShapeError: a sub-kernel's batch shape neither starts with ``batch`` nor is empty.
    """

    def is_kernel(m):
        return isinstance(m, kernel_cls)

    for child in sub_kernels(kernel, is_kernel):
        if child.batch_shape[: len(batch)] == batch:
            index_kernel_(child, key, batch, new_batch, kernel_cls)
        elif child.batch_shape:
            raise ShapeError(
                f"cannot index {type(kernel).__name__} of batch_shape {tuple(batch)}: its {type(child).__name__} "
                f"has batch_shape {tuple(child.batch_shape)}. Build sub-kernels with the full batch shape or none."
            )
    index_tensors_(kernel, key, batch, is_kernel, skip=("active_dims",))
    kernel.batch_shape = torch.Size([*new_batch, *kernel.batch_shape[len(batch) :]])
