r"""Data-parallel training of variational GPs under ``DistributedDataParallel``.

Each of the ``p`` ranks takes ``b`` points of every global minibatch of ``B = p b`` points
(``DistributedSampler``) and computes the ELBO's minibatch estimate on them,

.. math:: \ell_r = \frac1b \sum_{i \in \text{batch}_r} \mathbb E_q[\log p(y_i | f_i)] - \frac{\mathrm{KL}(q(u)\|p(u))}{N},

with ``N`` the global number of points. DDP averages the gradients over ranks, and
``(1/p) Σ_r ℓ_r = (1/B) Σ_{i ∈ batch} E_q[log p(y_i|f_i)] - KL/N`` is exactly the single-process
estimate on the whole minibatch: the KL is counted once. Natural-gradient steps
(:class:`~torchgp.optim.NGD`) act on the same averaged gradients.
"""

from __future__ import annotations

import math
import os
import time
import warnings

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from torchgp.distributed import process_group
from torchgp.distributed.checkpoint import load_checkpoint, save_checkpoint
from torchgp.distributed.errors import RankLostError
from torchgp.errors import InputError, NonFiniteError
from torchgp.optim.fit import FitResult

__all__ = ["DataParallelLoss", "distributed_loader", "fit"]


class DataParallelLoss(torch.nn.Module):
    """``(X, y) ↦ -mll(mll.model(X), y)`` as one module, to wrap in ``DistributedDataParallel``.

    Wrapping the objective (not only the model) puts the likelihood's parameters under DDP too, so
    that every trainable parameter's gradient is averaged over the ranks.

    Args:
        mll: e.g. ``VariationalELBO(likelihood, model, num_data=N)`` with ``N`` the global number of points.

    Shapes:
        ``X (b, d)``, ``y (b,)`` → scalar.

    Example:
        ``loss_fn = DistributedDataParallel(DataParallelLoss(elbo)); loss_fn(X, y).backward()``
    """

    def __init__(self, mll):
        super().__init__()
        if getattr(mll, "model", None) is None:
            raise InputError(f"DataParallelLoss needs an MLL or ELBO holding .model; got {type(mll).__name__}.")
        self.mll = mll

    def forward(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = -self.mll(self.mll.model(X), y)
        return loss.sum() if loss.dim() else loss


def distributed_loader(loader: DataLoader, seed: int = 0, group=None) -> DataLoader:
    """This rank's share of ``loader``: a ``DistributedSampler`` over its dataset, ``⌈B / p⌉`` points per batch.

    With one process the sampler still decides the order, so one process and ``p`` ranks visit the
    same global minibatches (rank ``r`` gets points ``r, r + p, ...`` of each).

    Args:
        loader: a ``DataLoader`` of ``(X, y)`` with the global batch size ``B``.
        seed: seed of the shuffle (the same on every rank); ``loader`` shuffles or not as before.
        group: the process group.

    Returns:
        A ``DataLoader`` with a ``DistributedSampler``.
    """
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise InputError(
            "torchgp.distributed.fit needs a torch.utils.data.DataLoader with a batch_size (the global minibatch "
            f"size), e.g. DataLoader(TensorDataset(X, y), batch_size=1024, shuffle=True); got {type(loader).__name__}."
        )
    p = process_group.world_size(group)
    if isinstance(loader.sampler, DistributedSampler):
        return loader
    sampler = DistributedSampler(
        loader.dataset,
        num_replicas=p,
        rank=process_group.rank(group),
        shuffle=isinstance(loader.sampler, RandomSampler),
        seed=seed,
        drop_last=loader.drop_last,
    )
    return DataLoader(
        loader.dataset,
        batch_size=math.ceil(loader.batch_size / p),
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
    )


def _optimizers(optimizer, params, lr):
    if isinstance(optimizer, str) and optimizer.upper().replace("_", "-") in ("L-BFGS-B", "LBFGSB", "SCIPY"):
        warnings.warn(
            "torchgp.distributed.fit: L-BFGS-B is a full-batch optimiser; data-parallel minibatch training uses "
            f"Adam (lr={lr}) instead. Pass optimizer='adam' (or a list such as [NGD(...), Adam(...)]) to choose.",
            stacklevel=3,
        )
        optimizer = "adam"
    if isinstance(optimizer, torch.optim.Optimizer):
        return [optimizer]
    if isinstance(optimizer, (list, tuple)) and all(isinstance(o, torch.optim.Optimizer) for o in optimizer):
        return list(optimizer)
    if isinstance(optimizer, str) and isinstance(getattr(torch.optim, _torch_name(optimizer), None), type):
        return [getattr(torch.optim, _torch_name(optimizer))(params, lr=lr)]
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return [optimizer(params, lr=lr)]
    raise InputError(
        f"torchgp.distributed.fit: unknown optimizer {optimizer!r}. Pass the name of a torch.optim optimiser "
        "('adam'), a class, an instance, or a list of instances (e.g. [NGD(...), Adam(...)])."
    )


def _torch_name(name: str) -> str:
    names = {n.lower(): n for n in dir(torch.optim)}
    return names.get(name.lower(), name)


def fit(
    mll,
    data: DataLoader,
    optimizer="adam",
    *,
    maxiter: int = 10,
    lr: float = 0.01,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: bool = True,
    progress: bool | None = None,
    group=None,
    **ddp_kwargs,
) -> FitResult:
    """Train a variational GP data-parallel: DDP over ``mll``, a ``DistributedSampler`` over ``data``.

    Works on one process too (then it is plain minibatch training with the same batches).

    Args:
        mll: ``VariationalELBO`` (or another approximate MLL) with ``num_data`` = the GLOBAL number of points.
        data: ``DataLoader`` of ``(X (B, d), y (B,))`` with the global batch size ``B``; each rank takes ``⌈B/p⌉``,
            moved to the device of the model's parameters.
        optimizer: a ``torch.optim`` name, class, instance, or a list of instances (``[NGD(...), Adam(...)]``).
        maxiter: number of epochs.
        lr: learning rate for an optimiser given by name or class.
        seed: seed of the data shuffle (the same on every rank).
        checkpoint: file to save to (rank 0, atomically) every ``checkpoint_every`` epochs, and to resume from
            when it exists and ``resume`` (with any number of ranks).
        checkpoint_every: epochs between checkpoints.
        resume: continue from ``checkpoint`` when the file exists.
        progress: print one line per epoch on rank 0 (default off).
        group: the process group (default: the world).
        **ddp_kwargs: passed to ``DistributedDataParallel`` (e.g. ``find_unused_parameters=True``).

    Returns:
        :class:`~torchgp.optim.FitResult` (``loss``: the last epoch's mean loss over all ranks).

    Raises:
        RankLostError: another rank died or stopped answering (within the collective timeout).
        NonFiniteError: the loss became NaN or infinite.
    """
    if getattr(mll, "model", None) is None or not hasattr(mll, "num_data"):
        raise InputError(
            "torchgp.distributed.fit trains variational GPs: pass VariationalELBO(likelihood, model, num_data=N) "
            "with N the global number of training points. For an exact GP wrap its kernel in "
            f"torchgp.distributed.ShardedKernel and call torchgp.fit(mll); got {type(mll).__name__}."
        )
    if int(maxiter) < 1 or int(checkpoint_every) < 1:
        raise InputError(f"maxiter and checkpoint_every must be >= 1; got {maxiter} and {checkpoint_every}.")
    loader = distributed_loader(data, seed, group)
    objective = DataParallelLoss(mll)
    params = [p for p in mll.parameters() if p.requires_grad]
    if not params:
        raise InputError("torchgp.distributed.fit: the model has no trainable parameters.")
    optimizers = _optimizers(optimizer, params, lr)
    device = params[0].device
    mll.train()
    mll.model.train()
    active = process_group.is_active(group)
    first_epoch = 0
    if checkpoint is not None and resume and os.path.exists(checkpoint):
        first_epoch = int(load_checkpoint(checkpoint, mll, optimizers).get("epoch", -1)) + 1
    try:
        step_fn = DistributedDataParallel(objective, process_group=group, **ddp_kwargs) if active else objective
    except RuntimeError as err:
        raise process_group.rank_lost_error(err, "DistributedDataParallel set-up", group) from err
    history: list[float] = []
    nfev = 0
    start = time.perf_counter()
    for epoch in range(first_epoch, int(maxiter)):
        loader.sampler.set_epoch(epoch)
        total = torch.zeros(2, dtype=torch.float64, device=device)  # on the device NCCL reduces on
        for X, y in loader:
            X, y = X.to(device, non_blocking=True), y.to(device, non_blocking=True)  # e.g. the rank's GPU
            try:
                for o in optimizers:
                    o.zero_grad()
                loss = step_fn(X, y)
                loss.backward()
            except RankLostError:
                raise
            except (dist.DistError, RuntimeError) as err:
                if active and _is_collective_failure(err):
                    raise process_group.rank_lost_error(err, f"DDP gradient all_reduce (epoch {epoch})", group) from err
                raise
            for o in optimizers:
                o.step()
            total[0] += loss.detach().to(torch.float64)
            total[1] += 1
            nfev += 1
        process_group.all_reduce_([total], f"loss sum (epoch {epoch})", group)
        mean = float(total[0] / total[1])
        if not math.isfinite(mean):
            raise NonFiniteError(f"torchgp.distributed.fit: the loss became {mean} in epoch {epoch}; lower lr={lr}.")
        history.append(mean)
        if progress and process_group.rank(group) == 0:
            print(f"epoch {epoch + 1}/{maxiter}: loss {mean:.6g}", flush=True)
        if checkpoint is not None and ((epoch + 1) % int(checkpoint_every) == 0 or epoch + 1 == int(maxiter)):
            save_checkpoint(checkpoint, mll, optimizers, group, epoch=epoch)
    return FitResult(
        loss=history[-1] if history else math.nan,
        iterations=len(history),
        function_evals=nfev,
        time=time.perf_counter() - start,
        stop_reason="maxiter",
        history=history,
        restart_losses=[history[-1] if history else math.nan],
        optimizer="+".join(type(o).__name__ for o in optimizers),
        message=f"data-parallel over {process_group.world_size(group)} rank(s)",
    )


def _is_collective_failure(err: BaseException) -> bool:
    """Whether ``err`` came from the communication backend rather than from the model."""
    if isinstance(err, dist.DistError):
        return True
    text = str(err).lower()
    return any(word in text for word in ("gloo", "nccl", "connection", "peer", "timed out", "timeout"))
