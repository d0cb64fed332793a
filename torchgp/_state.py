"""One key for every cache: the exact state a cached factorisation was built from.

A cache (an exact posterior ``(L, α)``, a variational ``chol(K_zz)``, an SGPR factorisation) is valid
only while everything it was computed from is unchanged. Version counters are not enough:
``p.data.fill_(v)``, ``p.data[...] = v`` and ``p.data = t`` change values without bumping
``p._version``. So the key holds the *values* of every parameter and buffer of the module and of the
extra tensors (training data, inputs), compared bit for bit, plus their shapes, dtypes and devices,
the grad mode and any settings the caller passes.

Cost: one concatenation of the raw bytes of O(#params + n·d) numbers and one ``torch.equal``,
against the O(n³) / O(m³) factorisation it guards (``benchmarks/state_key.py`` measures both).

Example:
    >>> import torch
    >>> from torchgp._state import state_key
    >>> lin = torch.nn.Linear(2, 1)
    >>> k = state_key(lin)
    >>> k == state_key(lin)
    True
    >>> _ = lin.weight.data.fill_(3.0)  # bumps no version counter
    >>> k == state_key(lin)
    False
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import torch
from torch import nn

__all__ = ["StateKey", "state_key"]


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of ``t`` as a flat ``uint8`` tensor (exact for every dtype; NaN equals itself)."""
    flat = t.detach().reshape(-1)
    if flat.dtype == torch.bool:
        return flat.to(torch.uint8)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    # A one-element tensor with stride 0 counts as contiguous, so .contiguous() keeps the stride that
    # .view(uint8) refuses: clone into a fresh contiguous layout whenever the last stride is not 1.
    if flat.numel() and flat.stride(-1) != 1:
        flat = flat.clone(memory_format=torch.contiguous_format)
    return flat.contiguous().view(torch.uint8)


class StateKey:
    """The values and metadata a cache was built from; compare two with ``==``.

    Attributes:
        values: one flat ``uint8`` tensor per device (the raw bytes of every tensor, in order).
        meta: hashable metadata: per tensor ``(shape, dtype, device)``, the grad mode, and ``extra``.
    """

    __slots__ = ("values", "meta")

    def __init__(self, values: tuple[torch.Tensor, ...], meta: tuple):
        self.values = values
        self.meta = meta

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StateKey):
            return NotImplemented
        if self.meta != other.meta or len(self.values) != len(other.values):
            return False
        return all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(self.values, other.values))

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None  # values are tensors: a key is compared, never hashed

    def __repr__(self) -> str:
        n = sum(v.numel() for v in self.values)
        return f"StateKey({len(self.meta[0])} tensors, {n} bytes, grad={self.meta[1]})"


class _TracingKey:
    """The key under ``torch.jit.trace``: equal to any key while tracing, to none afterwards.

    A trace records one call's tensor operations; comparing values would be baked into it as constants.
    So a cache built before tracing (GPyTorch's recipe: predict once, then trace) is used as it is, and
    becomes a constant of the traced graph; one built while tracing is rebuilt on the next ordinary call.
    """

    __slots__ = ()
    __hash__ = None

    def __eq__(self, other: object) -> bool:
        return torch.jit.is_tracing() and isinstance(other, (StateKey, _TracingKey))

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __repr__(self) -> str:
        return "StateKey(<tracing>)"


_TRACING = _TracingKey()


def state_key(
    module: nn.Module | None,
    *extra_tensors: torch.Tensor | None,
    settings: Iterable[Hashable] = (),
    exclude: nn.Module | None = None,
) -> StateKey:
    """The :class:`StateKey` of ``module``'s parameters and buffers and of ``extra_tensors``.

    Args:
        module: every ``module.parameters()`` and ``module.buffers()`` enters the key (``None``: none).
        *extra_tensors: further tensors the cache depends on (training inputs and targets, ``Z``);
            ``None`` entries are skipped (recorded as absent).
        settings: hashable values of the settings the cached result depends on, e.g.
            ``(settings.max_cholesky_size.value(),)``.
        exclude: a submodule of ``module`` whose parameters and buffers the cached result does not
            depend on (e.g. the variational distribution, for ``chol(K_zz)``).

    Returns:
        A key equal (``==``) to another exactly when every value, shape, dtype and device, the grad
        mode (``torch.is_grad_enabled()``) and the settings are the same.

    Shapes:
        Any; ``n`` tensors of total ``N`` elements cost one O(N) copy.
    """
    if torch.jit.is_tracing():
        return _TRACING
    tensors: list[torch.Tensor] = []
    if module is not None:
        # parameters() yields a shared parameter once, in registration order.
        tensors.extend(module.parameters())
        tensors.extend(module.buffers())
        if exclude is not None:
            skip = {id(t) for t in (*exclude.parameters(), *exclude.buffers())}
            tensors = [t for t in tensors if id(t) not in skip]
    absent: list[int] = []
    for i, t in enumerate(extra_tensors):
        if t is None:
            absent.append(i)
        else:
            tensors.append(t)
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(_as_bytes(t))
    # torch.cat copies: the key must not alias the live parameters it describes.
    values = tuple(torch.cat(chunks) for chunks in by_device.values())
    described = tuple((tuple(t.shape), t.dtype, t.device) for t in tensors)
    meta = (described, torch.is_grad_enabled(), tuple(absent), tuple(settings))
    return StateKey(values, meta)
