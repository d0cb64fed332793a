"""torchgp on ``torch.distributed``: sharded exact GPs and data-parallel variational GPs.

Launch with ``torchrun`` (gloo on CPU, NCCL on GPU) and call :func:`init` first:

* :class:`ShardedKernel` shares the kernel products of an exact GP's iterative path over the ranks
  (Wang et al. 2019); an unmodified training loop gives the same numbers on every rank.
* :func:`fit` trains a variational GP under ``DistributedDataParallel`` with a ``DistributedSampler``
  (:class:`DataParallelLoss` for a hand-written loop).
* :func:`save_checkpoint` / :func:`load_checkpoint`: rank 0 writes, atomically; any number of ranks resumes.
* A lost rank ends the job with :class:`RankLostError` on the others within the collective timeout.
"""

from torchgp.distributed.checkpoint import load_checkpoint, save_checkpoint
from torchgp.distributed.data_parallel import DataParallelLoss, distributed_loader, fit
from torchgp.distributed.errors import RankLostError
from torchgp.distributed.process_group import (
    all_reduce_,
    barrier,
    collective_timeout,
    init,
    is_active,
    launched_by_torchrun,
    rank,
    world_size,
)
from torchgp.distributed.sharded_kernel import ShardedKernel

__all__ = [
    "init",
    "is_active",
    "launched_by_torchrun",
    "rank",
    "world_size",
    "collective_timeout",
    "all_reduce_",
    "barrier",
    "ShardedKernel",
    "DataParallelLoss",
    "distributed_loader",
    "fit",
    "save_checkpoint",
    "load_checkpoint",
    "RankLostError",
]
