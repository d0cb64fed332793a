"""The system an iterative solve works on: ``K = base + diag(d)``, its products, dtype and preconditioners.

Shared by the iterative marginal likelihood and solves (:mod:`torchgp.linalg.iterative`) and, through
``_IterativeSolve``, by the structured solves (:mod:`torchgp.linalg.structured_solve`).
"""

from __future__ import annotations

import math
import warnings

import torch

from torchgp import beta_features, settings
from torchgp._shapes import broadcast_shapes
from torchgp.errors import NumericalWarning
from torchgp.linalg.blockwise import (
    base_inputs,
    kernel_matmul_nograd,
    operator_bilinear_grads,
    split_operator,
    tile_shard,
)
from torchgp.linalg.nystrom_preconditioner import NystromPreconditioner
from torchgp.linalg.operators import KernelOperator, Operator
from torchgp.linalg.pivoted_cholesky import build_preconditioner

# A kernel matrix up to this many bytes is evaluated once per forward (instead of once per CG iteration),
# as KernelOperator.matmul does; above it the products run block by block.
_DENSE_FORWARD_BYTES = 2**27


def preconditioner_rank(n: int) -> int:
    """Rank of the pivoted-Cholesky preconditioner at size n: ``min(max_preconditioner_size, max(200, ⌈√(160 n)⌉))``.

    A rank-k factor costs ``O(n k²)`` GEMM work (the blocked factorisation and ``C = I + LᵀD⁻¹L``, about ``5 n k²``
    flops), one CG iteration ``O(n²)`` kernel entries, so rank pays as long as it saves iterations. Measured
    (ARD RBF d = 8, ℓ = 0.5, σ² = 0.01, float32, 32 probes, CG to 1e-4 on the data and 1e-2 on the probes,
    1 thread, CPU seconds of factor + CG): n = 20,000: rank 800 → 64 iterations, 2.2 + 41.0 s; 1600 → 31,
    4.4 + 19.1 s; 2400 → 19, 8.3 + 12.0 s. n = 4000 (dense products): rank 358 → 62 iterations, 0.5 + 1.1 s;
    800 → 29, 0.3 + 0.7 s. ``√(160 n)`` (1789 at 20,000, 4000 at 10⁵) stays short of the point where the factor
    costs as much as the iterations it saves at 10⁵, and of its memory (``n k`` numbers). The factor stops earlier
    when it is already as good as it can usefully be (:func:`build_preconditioner`).
    """
    cap = int(settings.max_preconditioner_size.value())
    return min(cap, max(200, math.ceil(math.sqrt(160 * n))))


class _System:
    """What the Functions need besides their tensor inputs: ``K = base + diag(d)`` and the solve dtype.

    :class:`_IterativeSolve` needs of its ``system`` only ``shape``, ``diag``, ``solve_dtype``, ``matmul_fn()``,
    ``preconditioner()`` and ``bilinear_grads(U, V, needed)``; ``structured_system._Holder`` provides them too.
    """

    def __init__(self, op: Operator):
        self.base, self.diag = split_operator(op)
        self.inputs = base_inputs(self.base)
        self.blockwise = isinstance(self.base, KernelOperator) and self.base.dense_nbytes() > min(
            settings.max_dense_memory.value(), _DENSE_FORWARD_BYTES
        )
        # A kernel sharded over processes always multiplies tile by tile: each process its own tiles.
        self.blockwise = self.blockwise or tile_shard(self.base) is not None
        solve_dtype = settings.solve_dtype.value()
        # Mixed precision by default on the blockwise path: float32 kernel tiles (the O(n²) work) with
        # the O(n t) CG recurrences in float64. In float32 the recursive residual keeps falling while the
        # true one stalls (measured n = 20,000, rank 600: "converged" to 1e-4 with a true residual of
        # 2.5e-4); in float64 the residual CG stops on is the real one, at no measurable cost.
        if solve_dtype is None and self.blockwise and op.dtype == torch.float32:
            solve_dtype = torch.float64
        self.dtype = self.solve_dtype = solve_dtype or op.dtype
        # The preconditioner (n × rank) stays in the kernel's dtype unless a solve dtype was asked for.
        self.precond_dtype = settings.solve_dtype.value() or op.dtype
        self.shape, self.device = op.shape, op.device

    def _base_matmul(self):
        """``V ↦ base V`` without a graph: float32 tiles summed in V's dtype (blockwise), else one dense matrix."""
        base = self.base
        if self.blockwise:
            return lambda V: kernel_matmul_nograd(base, V)
        with torch.no_grad():
            K = base.to_dense().detach().to(self.dtype)
        return K.__matmul__

    def matmul_fn(self):
        """``V ↦ (K + diag d) V`` without a graph, in the solve dtype."""
        base, dtype = self.base, self.dtype
        shard = tile_shard(base)
        split = shard.sharded_matmul(base, self.diag, dtype) if hasattr(shard, "sharded_matmul") else None
        if split is not None:  # CG with its vectors split by rows over the processes (distributed.sharded_cg)
            return split
        mm = self._base_matmul()
        if self.diag is None:
            return mm
        d = self.diag.detach().to(dtype).unsqueeze(-1)
        return lambda V: mm(V) + d * V

    def preconditioner(self, pivots=None):
        """The pivoted-Cholesky preconditioner (reusing ``pivots``, ``(*batch, k)``, when given).

        Below ``settings.min_preconditioning_size`` rows there is none (as in GPyTorch): rank 0, i.e. ``P`` is the
        noise diagonal (without noise, ``diag K``), which leaves CG unpreconditioned up to that diagonal scaling.
        """
        if self.shape[-1] < settings.min_preconditioning_size.value():
            return build_preconditioner(self.base, self.diag, 0, self.precond_dtype)
        rank = preconditioner_rank(self.shape[-1]) if pivots is None else pivots.shape[-1]
        rank = self._rank_within_budget(rank)
        if pivots is not None and pivots.shape[-1] > rank:
            pivots = pivots[..., :rank]
        return build_preconditioner(self.base, self.diag, rank, self.precond_dtype, pivots=pivots)

    def _rank_within_budget(self, rank: int) -> int:
        """``rank``, lowered with a warning where the factor would take more than half the device's memory.

        Building the factor holds ``2 · batch · n · rank`` numbers at its peak (the factor, and a second array of
        its size while the probes are drawn from it). A sharded kernel keeps its rank: every process must build the
        same factor, and the processes' machines may differ in memory.
        """
        if tile_shard(self.base) is not None or rank == 0:
            return rank
        n = self.shape[-1]
        batch = math.prod(broadcast_shapes(self.shape[:-2], () if self.diag is None else self.diag.shape[:-1]))
        per_column = 2 * batch * n * torch.empty((), dtype=self.precond_dtype).element_size()
        budget = device_memory_budget(self.device)
        fits = budget // per_column
        if fits >= rank:
            return rank
        warnings.warn(
            NumericalWarning(
                f"The pivoted-Cholesky preconditioner of rank {rank} would take {rank * per_column / 2**30:.2f} GiB "
                f"while it is built (n = {n}, batch {batch}, {self.precond_dtype}), more than half the memory of "
                f"{self.device} ({budget / 2**30:.2f} GiB); its rank is capped at {fits}, so CG may take more "
                "iterations. Set settings.max_preconditioner_size to choose the rank yourself."
            ),
            stacklevel=2,
        )
        return int(fits)

    def solve_preconditioner(self):
        """The preconditioner of solves (:func:`iterative_solve`): :meth:`preconditioner`, except below
        ``settings.min_preconditioning_size`` under ``beta_features.default_preconditioner``, where (as GPyTorch's
        flag gives solves without a preconditioner a randomized low-rank one) it is the randomized Nyström
        preconditioner of rank ``preconditioner_rank(n)`` (:mod:`torchgp.linalg.nystrom_preconditioner`)."""
        n = self.shape[-1]
        cap = int(settings.max_preconditioner_size.value())
        if n >= settings.min_preconditioning_size.value() or cap == 0 or not beta_features.default_preconditioner.on():
            return self.preconditioner()
        mm, dtype = self._base_matmul(), self.dtype
        batch = self.shape[:-2] if self.diag is None else broadcast_shapes(self.shape[:-2], self.diag.shape[:-1])
        with torch.no_grad():
            return NystromPreconditioner(mm, batch, n, min(preconditioner_rank(n), n), self.diag, dtype, self.device)

    def bilinear_grads(self, U, V, needed) -> list:
        """Gradients of ``Σ_j u_jᵀ K(θ) v_j`` (``U, V (*batch, n, k)``) w.r.t. each input that is ``needed`` (else None)."""
        wanted = [x for x, need in zip(self.inputs, needed) if need]
        grads = iter(operator_bilinear_grads(self.base, wanted, U, V) if wanted else [])
        return [next(grads) if need else None for need in needed]


def _diag_grad(diag: torch.Tensor | None, g: torch.Tensor, needed: bool):
    if diag is None or not needed:
        return None
    return g.to(diag.dtype).sum_to_size(diag.shape)


def device_memory_budget(device) -> int:
    """Bytes the preconditioner's factor may take on ``device``: half its memory (CUDA: the GPU's; else RAM)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 2
    return settings._default_dense_budget()
