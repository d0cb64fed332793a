"""Checkpoints of a data-parallel or sharded fit: written by rank 0 only, atomically, readable by any number of ranks.

The state saved is rank-independent (parameters and optimiser states are the same on every rank,
since every rank applies the same averaged gradients), so a checkpoint written by ``p`` ranks
resumes on ``q``: each rank loads the same file.
"""

from __future__ import annotations

import os
import tempfile

import torch

from torchgp.distributed import process_group
from torchgp.errors import InputError

__all__ = ["save_checkpoint", "load_checkpoint"]


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (so keys carry no ``module.`` prefix)."""
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


def save_checkpoint(path, module: torch.nn.Module, optimizers=(), group=None, **state) -> None:
    """Write ``module``'s and the optimisers' states to ``path`` from rank 0; every rank then waits for it.

    The file is written to a temporary name in the same folder, flushed to disk and renamed over
    ``path`` (``os.replace`` is atomic), so a reader never sees a half-written checkpoint, even if
    rank 0 dies while writing.

    Args:
        path: file to write.
        module: what to save, usually the MLL / ELBO (it holds the model and the likelihood); a
            ``DistributedDataParallel`` wrapper is saved as the module it wraps.
        optimizers: an optimiser or a sequence of them (e.g. ``[ngd, adam]``).
        group: the process group (default: the world).
        **state: anything else to save (``epoch=3``), read back by :func:`load_checkpoint`.

    Raises:
        RankLostError: a rank was lost while the others waited for the write.
    """
    if isinstance(optimizers, torch.optim.Optimizer):
        optimizers = [optimizers]
    if process_group.rank(group) == 0:
        payload = {
            "module": _unwrap(module).state_dict(),
            "optimizers": [o.state_dict() for o in optimizers],
            "world_size": process_group.world_size(group),
            "state": dict(state),
        }
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    process_group.barrier("barrier after writing a checkpoint", group)


def load_checkpoint(path, module: torch.nn.Module, optimizers=(), map_location="cpu") -> dict:
    """Restore ``module`` and the optimisers from ``path`` (on every rank, whatever the number of ranks).

    Args:
        path: a file written by :func:`save_checkpoint`.
        module: the same kind of module as was saved (a DDP wrapper is loaded into the module it wraps).
        optimizers: the optimisers, in the order they were saved.
        map_location: where tensors go (``"cpu"``; a device, e.g. ``f"cuda:{local_rank}"``).

    Returns:
        The extra state saved with it plus ``world_size`` (the number of ranks that wrote it).

    Raises:
        InputError: the file is missing or holds a different number of optimisers.
    """
    if isinstance(optimizers, torch.optim.Optimizer):
        optimizers = [optimizers]
    if not os.path.exists(path):
        raise InputError(f"load_checkpoint: no checkpoint at {path!r}; write one with save_checkpoint first.")
    payload = torch.load(path, map_location=map_location, weights_only=False)
    saved = payload["optimizers"]
    if len(saved) != len(optimizers):
        raise InputError(
            f"load_checkpoint: {path!r} holds {len(saved)} optimiser state(s) but {len(optimizers)} optimiser(s) "
            "were passed; pass the same optimisers, in the same order, as to save_checkpoint."
        )
    _unwrap(module).load_state_dict(payload["module"])
    for optimizer, state in zip(optimizers, saved):
        optimizer.load_state_dict(state)
    return {**payload["state"], "world_size": payload["world_size"]}
