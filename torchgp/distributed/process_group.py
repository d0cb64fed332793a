r"""The process group: set up from torchrun's environment, with collectives that fail clearly.

Every collective torchgp issues goes through :func:`all_reduce_`, which waits at most the
collective timeout (``init(timeout=...)``) and turns a failed or timed-out collective into a
:class:`~torchgp.distributed.errors.RankLostError` naming the ranks that did not report back.
The lost ranks are found through the rendezvous store: each surviving rank writes
``torchgp/alive/<attempt>/<rank>`` once its collective failed, waits a short grace period for the others,
and names the ranks whose key never appeared (a dead process cannot write it).
"""

from __future__ import annotations

import os
import time
import warnings
from datetime import timedelta

import torch
import torch.distributed as dist

from torchgp.distributed.errors import RankLostError
from torchgp.errors import InputError

__all__ = [
    "init",
    "is_active",
    "launched_by_torchrun",
    "rank",
    "world_size",
    "collective_timeout",
    "all_reduce_",
    "all_gather_rows",
    "reduce_scatter_rows",
    "barrier",
    "rank_lost_error",
]

# Seconds a collective may wait for its peers. 300 s leaves room for one slow rank's CG
# preconditioner (a few seconds at n = 10⁵) and checkpoint writes many times over, while a lost
# rank still ends the job within minutes rather than torch's default 30.
DEFAULT_TIMEOUT = 300.0

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

# The timeout each initialised group was given (keyed by the group object; None = default group).
_timeouts: dict = {}


def launched_by_torchrun() -> bool:
    """Whether torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) is set."""
    return all(name in os.environ for name in _TORCHRUN_VARS)


def init(
    backend: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    init_method: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> bool:
    """``torch.distributed.init_process_group`` from torchrun's environment.

    Args:
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (GPU); default nccl when CUDA is present, else gloo.
        timeout: collective timeout in seconds: a collective whose peers do not answer within it
            fails with :class:`~torchgp.distributed.errors.RankLostError` instead of hanging.
        init_method: e.g. ``"tcp://127.0.0.1:29500"`` (then pass ``rank`` and ``world_size``);
            default ``"env://"``, torchrun's environment.
        rank, world_size: for ``init_method`` other than ``env://``.

    Returns:
        True when a process group is (now) initialised; False, with a warning saying how to launch,
        when the process was not started by torchrun and no ``init_method`` was given (a no-op: the
        program runs as one process).

    Raises:
        InputError: an unknown backend, nccl without CUDA, or a non-positive timeout.

    Example:
        ``torchrun --nproc-per-node=2 train.py`` with ``torchgp.distributed.init()`` at the top of ``train.py``.
    """
    if not timeout > 0:
        raise InputError(f"torchgp.distributed.init: timeout must be a positive number of seconds; got {timeout!r}.")
    if dist.is_initialized():
        _timeouts.setdefault(None, float(timeout))
        return True
    if init_method is None and not launched_by_torchrun():
        missing = [name for name in _TORCHRUN_VARS if name not in os.environ]
        warnings.warn(
            "torchgp.distributed.init: not launched by torchrun (environment variables "
            f"{', '.join(missing)} are unset), so no process group was created and this program runs as a "
            "single process. Launch it with `torchrun --nproc-per-node=2 script.py` (add --nnodes, --node-rank "
            "and --rdzv-endpoint for several machines).",
            stacklevel=2,
        )
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    backend = backend.lower()
    if backend not in ("gloo", "nccl", "mpi"):
        raise InputError(f"torchgp.distributed.init: backend must be 'gloo', 'nccl' or 'mpi'; got {backend!r}.")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise InputError("torchgp.distributed.init: backend 'nccl' needs CUDA; use backend='gloo' on CPU.")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    kwargs = {}
    if rank is not None:
        kwargs["rank"] = int(rank)
    if world_size is not None:
        kwargs["world_size"] = int(world_size)
    dist.init_process_group(
        backend, init_method=init_method or "env://", timeout=timedelta(seconds=float(timeout)), **kwargs
    )
    _timeouts[None] = float(timeout)
    return True


def is_active(group=None) -> bool:
    """Whether a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def rank(group=None) -> int:
    """This process's rank in ``group`` (0 when no group is initialised)."""
    return dist.get_rank(group) if dist.is_available() and dist.is_initialized() else 0


def world_size(group=None) -> int:
    """Number of ranks in ``group`` (1 when no group is initialised)."""
    return dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1


def collective_timeout(group=None) -> float:
    """The collective timeout in seconds: the one given to :func:`init`, else :data:`DEFAULT_TIMEOUT`."""
    return _timeouts.get(group, _timeouts.get(None, DEFAULT_TIMEOUT))


def _store():
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # a group created without a store (e.g. MPI)
        return None


def check_in_grace(timeout: float) -> float:
    """Seconds a rank whose collective failed waits for its peers to check in before naming the lost ones."""
    return min(2.0, timeout / 4)


def rank_lost_error(err: BaseException, what: str, group=None) -> RankLostError:
    """A :class:`RankLostError` for the collective ``what`` that failed with ``err``, naming the lost ranks.

    Args:
        err: the exception the collective raised.
        what: the operation, for the message (``"all_reduce of the CG products"``).
        group: the process group.
    """
    me, size, timeout = rank(group), world_size(group), collective_timeout(group)
    store = _store()
    # torchrun keeps its store across restarts of the workers: the keys of each attempt are apart.
    prefix = f"torchgp/alive/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    lost: list[int] = []
    where = ""
    if store is not None:
        try:
            store.set(f"{prefix}/{me}", "1")
            deadline = time.monotonic() + check_in_grace(timeout)
            while True:
                lost = [r for r in range(size) if r != me and not store.check([f"{prefix}/{r}"])]
                if not lost or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        except Exception:  # the store itself is gone with the process that hosted it
            lost = [0] if me != 0 else []
            where = " (the rendezvous store it hosted is unreachable)"
    if lost:
        who = f"rank{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))} of {size}"
        head = f"{who} {'was' if len(lost) == 1 else 'were'} lost{where}: it died or stopped answering"
    else:
        head = "a peer rank failed"
    message = (
        f"torchgp.distributed: {head} during the {what} on rank {me}. Collective timeout: {timeout:g} s "
        "(torchgp.distributed.init(timeout=...)). The job cannot continue; restart it from the last checkpoint "
        f"(torchgp.distributed.load_checkpoint), with any number of ranks. Cause: {type(err).__name__}: {err}"
    )
    return RankLostError(message, tuple(lost), timeout)


def _wait(work, what: str, group) -> None:
    timeout = collective_timeout(group)
    try:
        if not work.wait(timedelta(seconds=timeout)):
            raise TimeoutError(f"no answer within {timeout:g} s")
    except (RuntimeError, TimeoutError) as err:  # DistError subclasses RuntimeError
        raise rank_lost_error(err, what, group) from err


def all_reduce_(tensors: list[torch.Tensor], what: str = "all_reduce", group=None) -> list[torch.Tensor]:
    """Sum each tensor over the ranks of ``group``, in place, with one collective per dtype.

    Every rank receives the same sums (the ring's result is broadcast), so all ranks go on identically.

    Args:
        tensors: tensors of any shapes (same list, shapes and dtypes on every rank).
        what: the operation, named in the error if a rank is lost.
        group: the process group (default: the world).

    Returns:
        ``tensors``, summed.

    Raises:
        RankLostError: a peer died or did not answer within :func:`collective_timeout`.
    """
    if not tensors or not is_active(group):
        return tensors
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group_tensors in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group_tensors])
        try:
            work = dist.all_reduce(flat, group=group, async_op=True)
        except RuntimeError as err:
            raise rank_lost_error(err, what, group) from err
        _wait(work, what, group)
        offset = 0
        for t in group_tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
    return tensors


def _start(launch, what: str, group) -> None:
    """Start the collective ``launch()`` (async) and wait for it, turning a failure into a RankLostError."""
    try:
        work = launch()
    except RuntimeError as err:
        raise rank_lost_error(err, what, group) from err
    _wait(work, what, group)


def _row_blocks(n: int, size: int) -> list[tuple[int, int]]:
    # The split of torchgp.linalg.sharded_preconditioner.row_range: contiguous, sizes differing by at most 1.
    return [(r * n // size, (r + 1) * n // size) for r in range(size)]


def _padded(block: torch.Tensor, rows: int) -> torch.Tensor:
    """``block (*batch, r, c)`` as a contiguous ``(*batch, rows, c)`` tensor, zero rows appended (r ≤ rows)."""
    if block.shape[-2] == rows and block.is_contiguous():
        return block
    out = block.new_zeros(*block.shape[:-2], rows, block.shape[-1])
    out[..., : block.shape[-2], :] = block
    return out


def all_gather_rows(local: torch.Tensor, n: int, what: str = "all_gather", group=None) -> torch.Tensor:
    """Every rank's block of rows, stacked in rank order: ``local (*batch, hi - lo, c)`` → ``(*batch, n, c)``.

    Rank ``r`` of ``p`` holds the rows ``[r n // p, (r + 1) n // p)``; blocks are padded to ``⌈n / p⌉`` rows
    for the one ``all_gather``. Without a multi-rank group, ``local`` is the whole and is returned.

    Raises:
        RankLostError: a peer died or did not answer within :func:`collective_timeout`.
    """
    if not is_active(group):
        return local
    blocks = _row_blocks(n, world_size(group))
    rows = max(hi - lo for lo, hi in blocks)
    send = _padded(local, rows)
    if send.dim() == 2:  # the blocks land in one buffer, with no copy after when they are all full
        out = send.new_empty(len(blocks) * rows, send.shape[-1])
        recv = list(out.split(rows))
    else:
        recv = [torch.empty_like(send) for _ in blocks]
    _start(lambda: dist.all_gather(recv, send, group=group, async_op=True), what, group)
    if send.dim() == 2 and len(blocks) * rows == n:
        return out
    return torch.cat([r[..., : hi - lo, :] for r, (lo, hi) in zip(recv, blocks)], -2)


def reduce_scatter_rows(full: torch.Tensor, n: int, what: str = "reduce_scatter", group=None) -> torch.Tensor:
    """This rank's rows of the sum over ranks: ``full (*batch, n, c)`` → ``(*batch, hi - lo, c)``.

    The rows ``[lo, hi)`` of ``Σ_ranks full`` for this rank's block (as in :func:`all_gather_rows`), with
    one ``reduce_scatter``: each rank sends and receives about ``n c (p - 1) / p`` numbers, half of an
    ``all_reduce``. Without a multi-rank group, ``full`` is returned.

    Raises:
        RankLostError: a peer died or did not answer within :func:`collective_timeout`.
    """
    if not is_active(group):
        return full
    blocks = _row_blocks(n, world_size(group))
    rows = max(hi - lo for lo, hi in blocks)
    sends = [_padded(full[..., lo:hi, :], rows) for lo, hi in blocks]
    out = torch.empty_like(sends[0])
    _start(lambda: dist.reduce_scatter(out, sends, group=group, async_op=True), what, group)
    lo, hi = blocks[rank(group)]
    return out[..., : hi - lo, :]


def barrier(what: str = "barrier", group=None) -> None:
    """Wait for every rank (at most the collective timeout); a no-op for one process.

    Raises:
        RankLostError: a peer died or did not answer in time.
    """
    if not is_active(group):
        return
    try:
        work = dist.barrier(group=group, async_op=True)
    except RuntimeError as err:
        raise rank_lost_error(err, what, group) from err
    _wait(work, what, group)
