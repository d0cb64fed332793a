r"""``ShardedKernel``: an exact GP's kernel products partitioned over the ranks of a process group.

Wang et al. (2019, §3) train exact GPs on a million points by partitioning every kernel product
``K V`` over devices. Here every rank holds the whole training set ``X`` (``O(n d)``); the tiles
``K_IJ`` of each product (see :mod:`torchgp.linalg.blockwise`) are dealt out round-robin, tile
``i`` to rank ``i mod p``, so each rank evaluates about ``1/p`` of the kernel entries and sums its
partial product, and one ``all_reduce`` gives every rank the whole ``K V``:

.. math:: K V = \sum_{r=0}^{p-1} \sum_{i \equiv r \ (\mathrm{mod}\ p)} T_i(V),

with ``T_i(V)`` the contribution of tile ``i`` (``K_IJ V_J``, plus ``K_IJᵀ V_I`` for a mirrored
tile). The gradients' bilinear forms ``Σ_j u_jᵀ (∂K/∂θ) v_j`` are split over the same tiles and
summed with ``all_reduce``. The pivoted-Cholesky preconditioner is split by rows: each rank computes
and holds its row block of the ``n × k`` factor (:mod:`torchgp.linalg.sharded_preconditioner`; about
two small ``all_reduce`` per block of up to 64 pivots), so memory per rank is ``O(n k / p + n d)``.
CG runs with its vectors split by rows too (:mod:`torchgp.distributed.sharded_cg`): each rank updates
its rows of ``x, r, p, z``, the directions are gathered once per iteration and the partial products
reduce-scattered, and only inner products are summed whole. Every rank sees the same sums, so it runs
identical iterations and gets the same loss, gradients and predictions. Communication per CG iteration is about
``2 n · (1 + probes) (p - 1) / p`` numbers per rank; computation ``O(n² / p)``.
"""

from __future__ import annotations

import torch

from torchgp.distributed import process_group
from torchgp.distributed.sharded_cg import ShardedMatmul
from torchgp.kernels.kernel import Kernel

__all__ = ["ShardedKernel"]


class _TileShard:
    """Which tiles this rank evaluates, and how partial results are summed (the linalg hook's protocol)."""

    def __init__(self, group, rank: int, world_size: int, shard_cg: bool = True):
        self.group, self.rank, self.world_size, self.shard_cg = group, rank, world_size, shard_cg

    def owns(self, index: int) -> bool:
        """Whether this rank evaluates tile ``index`` (in the order of ``blockwise._tiles``)."""
        return index % self.world_size == self.rank

    def all_reduce(self, tensors: list[torch.Tensor], what: str = "kernel products") -> list[torch.Tensor]:
        """Sum ``tensors`` over the ranks in place."""
        return process_group.all_reduce_(tensors, f"all_reduce of the sharded {what}", self.group)

    def all_gather_rows(self, local: torch.Tensor, n: int, what: str) -> torch.Tensor:
        """Every rank's block of rows, stacked: ``(*batch, hi - lo, c)`` → ``(*batch, n, c)`` (one ``all_gather``)."""
        return process_group.all_gather_rows(local, n, f"all_gather of the sharded {what}", self.group)

    def sharded_matmul(self, base, diag, dtype):
        """The row-split CG's product for ``base + diag(diag)`` (:class:`~torchgp.distributed.sharded_cg.ShardedMatmul`),
        or None when CG is to run replicated (``shard_cg=False``)."""
        return ShardedMatmul(self, base, diag, dtype) if self.shard_cg else None


class ShardedKernel(Kernel):
    """Wrap the model's kernel so that its large products are shared by the ranks of a process group.

    With no process group (or one rank) it is its base kernel. With ``p`` ranks, every product the
    iterative path forms (CG / Lanczos in training, the solves of predictions, the gradients'
    bilinear forms) is evaluated a ``1/p`` share per rank and summed with ``all_reduce``; every
    rank must run the same program on the same data with the same seed (an unmodified training
    loop does). The Cholesky path (n ≤ ``settings.max_cholesky_size``) is replicated, not shared.

    Args:
        base_kernel: the kernel to shard (the model's outermost kernel, e.g. a ``ScaleKernel``).
        group: the ``torch.distributed`` process group (default: the world).
        shard_cg: split CG's vectors by rows over the ranks (default); False runs CG replicated on every
            rank over the sharded products (the same iterations, more communication and ``O(n t)`` work per rank).

    Shapes:
        as the base kernel: ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → ``(*batch, n, m)``.

    Example:
        >>> import torchgp
        >>> k = torchgp.distributed.ShardedKernel(torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel()))
        >>> k.base_kernel.outputscale.shape
        torch.Size([])
    """

    def __init__(self, base_kernel: Kernel, group=None, shard_cg: bool = True):
        if not isinstance(base_kernel, Kernel):
            raise TypeError(f"ShardedKernel needs a torchgp Kernel; got {type(base_kernel).__name__}.")
        super().__init__(batch_shape=base_kernel.batch_shape)
        self.base_kernel = base_kernel
        self.group = group
        self.shard_cg = bool(shard_cg)

    @property
    def is_stationary(self) -> bool:
        return self.base_kernel.is_stationary

    @property
    def tile_delegate(self) -> Kernel:
        """The kernel whose tiles these are: this one evaluates as its base kernel (the fast tile route reads it)."""
        return self.base_kernel

    @property
    def tile_shard(self) -> _TileShard | None:
        """This rank's share of the tiles, or None without a multi-rank process group."""
        if not process_group.is_active(self.group):
            return None
        return _TileShard(
            self.group, process_group.rank(self.group), process_group.world_size(self.group), self.shard_cg
        )

    def output_shape(self, x1, x2, last_dim_is_batch: bool = False, **params) -> torch.Size:
        return self.base_kernel.output_shape(x1, x2, last_dim_is_batch=last_dim_is_batch, **params)

    def forward(self, x1, x2, diag: bool = False, last_dim_is_batch: bool = False, **params):
        return self.base_kernel.evaluate_block(x1, x2, diag=diag, last_dim_is_batch=last_dim_is_batch, **params)

    def num_outputs_per_input(self, x1, x2) -> int:
        return self.base_kernel.num_outputs_per_input(x1, x2)
