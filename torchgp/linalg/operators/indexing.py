"""Index helpers shared by the operators: ``op[idx]`` split into batch, row and column parts."""

from __future__ import annotations

import torch


def _full(s) -> bool:
    return isinstance(s, slice) and s == slice(None)


def _as_index(i):
    if isinstance(i, (list, tuple)) or (isinstance(i, torch.Tensor) and i.dtype == torch.bool):
        i = torch.as_tensor(i)
        if i.dtype == torch.bool:
            i = i.nonzero().squeeze(-1)
    return i


def split_index(idx, ndim: int):
    """``op[idx]`` → ``(batch index tuple, row index, column index)``, ``Ellipsis`` expanded, missing dims ``:``."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    if any(i is None for i in idx):
        raise IndexError("Operators cannot be indexed with None (new axes); index op.to_dense() instead.")
    n_ell = sum(i is Ellipsis for i in idx)
    if n_ell > 1:
        raise IndexError("An index can only have a single ellipsis ('...').")
    if n_ell:
        pos = next(k for k, i in enumerate(idx) if i is Ellipsis)
        idx = idx[:pos] + (slice(None),) * (ndim - len(idx) + 1) + idx[pos + 1 :]
    if len(idx) > ndim:
        raise IndexError(f"Too many indices ({len(idx)}) for an operator of {ndim} dimensions.")
    idx = tuple(_as_index(i) for i in idx) + (slice(None),) * (ndim - len(idx))
    return idx[:-2], idx[-2], idx[-1]


def index_batch(t: torch.Tensor, batch_shape, batch_idx, trailing: int) -> torch.Tensor:
    """Apply a batch index to a component ``t`` of shape ``(*batch', *rest)`` with ``len(rest) == trailing``."""
    t = t.expand(*batch_shape, *t.shape[t.dim() - trailing :])
    return t[(*batch_idx, *([slice(None)] * trailing))]
