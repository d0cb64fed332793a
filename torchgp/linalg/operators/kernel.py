r"""The kernel matrix ``k(x1, x2)`` as an operator, and its products computed tile by tile.

:class:`KernelOperator` knows ``(kernel, x1, x2)`` and evaluates entries only when asked: ``to_dense()``
refuses up front (``KernelMemoryError``) a matrix over ``settings.max_dense_memory``, indexing evaluates
only the rows and columns asked for, and ``matmul`` evaluates the matrix once when it is small
(:func:`dense_product_bytes`) and otherwise block by block, never holding ``K`` or ``∂K/∂θ`` whole.

Forward, ``K @ V`` is formed from square tiles ``K[I, J]`` of side ``settings.kernel_block_size``
(memory ``O(block²)``; a symmetric ``K`` evaluates only the tiles on and above the diagonal).
Backward, the gradient of a scalar ``g(K V)`` with respect to the kernel's parameters θ and inputs
is the derivative of the bilinear form

.. math::
    \frac{\partial}{\partial\theta} \sum_i u_i^\top K(\theta)\, v_i
        = \sum_{\text{tiles } I,J} \frac{\partial}{\partial\theta} \big\langle K_{IJ}(\theta),\, U_I V_J^\top \big\rangle_F,
    \qquad U = \frac{\partial g}{\partial (KV)},

so each tile is recomputed under ``torch.enable_grad()`` and differentiated by
``torch.autograd.grad`` (Gardner et al. 2018, §4 "derivatives of the bilinear form"; Wang et al.
2019, §3 partitioned kernel products), once for all the bilinear forms (the ``u_j``, ``v_j`` are
stacked). Only one tile's graph is alive at a time.

This one module owns the operator, its tiles, its backward and its dense threshold;
:mod:`torchgp.linalg.blockwise` builds the iterative path's operator-level helpers on it.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.errors import ShapeError
from torchgp.linalg.kernel_tiles import exp_tile_matmul, exp_tile_rows, feature_tile_side
from torchgp.linalg.operators.base import Operator
from torchgp.linalg.operators.basic import DenseOperator
from torchgp.linalg.operators.indexing import index_batch

__all__ = [
    "KernelOperator",
    "DENSE_PRODUCT_BYTES",
    "dense_product_bytes",
    "blockwise_matmul",
    "kernel_inputs",
    "kernel_matmul_nograd",
    "kernel_bilinear_grads",
    "tile_shard",
]

# A kernel matrix up to this many bytes (and under settings.max_dense_memory) is evaluated once for a product
# instead of tile by tile: 128 MiB, a float64 4096² matrix, is evaluated and multiplied at BLAS speed, while
# the tiles' bookkeeping and recomputation in the backward only pay off above it.
DENSE_PRODUCT_BYTES = 2**27


def dense_product_bytes() -> int:
    """The size in bytes up to which a kernel matrix is evaluated whole for a product.

    ``min(settings.max_dense_memory, DENSE_PRODUCT_BYTES)``: the one threshold the operator's ``matmul``, the
    iterative solvers and the predictive root use to choose between one dense evaluation and tiles.
    """
    return min(int(settings.max_dense_memory.value()), DENSE_PRODUCT_BYTES)


def _uniform_batch(kernel) -> bool:
    """Whether no kernel (or sub-kernel) has batch-shaped hyperparameters."""
    return all(len(getattr(m, "batch_shape", ())) == 0 for m in kernel.modules())


class KernelOperator(Operator):
    """The kernel matrix ``k(x1, x2)``, ``(*batch, n, m)``, evaluated only when asked.

    Args:
        kernel: a :class:`~torchgp.kernels.Kernel`; its ``evaluate_block(x1, x2, diag=False)``
            gives dense blocks (active dims and batch handling included).
        x1: ``(*batch, n, d)`` inputs; x2: ``(*batch, m, d)`` inputs.
        params: extra keyword arguments passed to the kernel's forward.
    """

    def __init__(self, kernel, x1: torch.Tensor, x2: torch.Tensor, **params):
        self.kernel, self.x1, self.x2, self.params = kernel, x1, x2, params
        self.dtype, self.device = x1.dtype, x1.device
        self.shape = kernel.output_shape(x1, x2, **params)
        self.symmetric = x1 is x2

    def _dense(self):
        return self.kernel.evaluate_block(self.x1, self.x2, **self.params)

    def evaluate_kernel(self) -> Operator:
        """The evaluated kernel matrix as a :class:`DenseOperator` (guarded by ``settings.max_dense_memory``)."""
        return DenseOperator(self.to_dense())

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)
        if self.shape[-1] != self.shape[-2]:
            raise ShapeError(f"diagonal() needs a square kernel matrix; got shape {tuple(self.shape)}.")
        return self.kernel.evaluate_block(self.x1, self.x2, diag=True, **self.params).expand(self.shape[:-1])

    def block(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of the matrix, ``(*batch, stop - start, m)``, differentiable."""
        x1 = self.x1[..., start:stop, :]
        return self.kernel.evaluate_block(x1, self.x2, **self.params)

    def dense_products(self) -> bool:
        """Whether products evaluate the whole matrix once (one row block, or at most :func:`dense_product_bytes`)."""
        return self.shape[-2] <= settings.kernel_block_size.value() or self.dense_nbytes() <= dense_product_bytes()

    def _matmul(self, rhs):
        if self.dense_products():
            return self._dense() @ rhs
        return blockwise_matmul(self, rhs)

    def _tensors(self):
        return [self.x1, self.x2, *self.kernel.parameters()]

    def _transpose(self):
        # k(x, x') = k(x', x) for a covariance function.
        if self.symmetric:
            return self
        return KernelOperator(self.kernel, self.x2, self.x1, **self.params)

    def _simple(self) -> bool:
        return _uniform_batch(self.kernel) and not self.params.get("last_dim_is_batch", False)

    def _with_inputs(self, x1, x2) -> KernelOperator:
        return KernelOperator(self.kernel, x1, x1 if (self.symmetric and x2 is None) else x2, **self.params)

    def _expand(self, batch_shape):
        if not self._simple():
            return super()._expand(batch_shape)
        x1 = self.x1.expand(*batch_shape, *self.x1.shape[-2:])
        return self._with_inputs(x1, None if self.symmetric else self.x2.expand(*batch_shape, *self.x2.shape[-2:]))

    def _getitem_batch(self, batch_idx):
        if not self._simple():
            return super()._getitem_batch(batch_idx)
        x1 = index_batch(self.x1, self.batch_shape, batch_idx, 2)
        x2 = None if self.symmetric else index_batch(self.x2, self.batch_shape, batch_idx, 2)
        return self._with_inputs(x1, x2)

    def _getitem_slices(self, rows, cols):
        return KernelOperator(self.kernel, self.x1[..., rows, :], self.x2[..., cols, :], **self.params)

    def _getitem_entries(self, rows, cols):
        # Only the rows and columns asked for are evaluated.
        def pick(x, i):
            if isinstance(i, int):
                return x[..., [i], :]
            if isinstance(i, torch.Tensor) and i.dim() > 1:
                return None
            return x[..., i, :]

        x1, x2 = pick(self.x1, rows), pick(self.x2, cols)
        if x1 is None or x2 is None:
            return super()._getitem_entries(rows, cols)
        pairwise = isinstance(rows, torch.Tensor) and isinstance(cols, torch.Tensor)
        if pairwise:
            if rows.numel() != cols.numel():
                raise IndexError(f"Row and column index tensors differ in length: {rows.numel()} and {cols.numel()}.")
            out = self.kernel.evaluate_block(x1, x2, diag=True, **self.params)
            return out.expand(*self.batch_shape, out.shape[-1])
        out = self.kernel.evaluate_block(x1, x2, **self.params)
        out = out.expand(*self.batch_shape, *out.shape[-2:])
        if isinstance(rows, int):
            out = out[..., 0, :]
            return out[..., 0] if isinstance(cols, int) else out
        return out[..., :, 0] if isinstance(cols, int) else out

    def __repr__(self) -> str:
        return f"KernelOperator({type(self.kernel).__name__}, shape={tuple(self.shape)}, dtype={self.dtype})"


def _tiles(op: KernelOperator, block: int | None = None):
    """``(rows, cols, mirrored)`` slices of the tiles that cover ``op``, ``block × block`` each
    (default ``settings.kernel_block_size``).

    Tiles, not full row blocks: a ``block × m`` row block at m = 10⁵ is 400 MB and every pass over
    it (distance GEMM, exp, product) runs at memory speed, while a 1024 × 1024 tile stays in cache
    (measured 6.2 → 2.5 ns per kernel entry and product, float32, 1 thread). For a symmetric
    operator (``x1 is x2``) only the tiles on and above the diagonal are listed: an off-diagonal
    tile ``K_IJ`` (``mirrored=True``) also stands for ``K_JI = K_IJᵀ``, so every kernel entry is
    evaluated once per pass instead of twice.
    """
    n, m = op.shape[-2], op.shape[-1]
    block = int(settings.kernel_block_size.value()) if block is None else int(block)
    if op.symmetric:
        for rs in range(0, n, block):
            for cs in range(rs, m, block):
                yield slice(rs, min(rs + block, n)), slice(cs, min(cs + block, m)), cs != rs
    else:
        for rs in range(0, n, block):
            for cs in range(0, m, block):
                yield slice(rs, min(rs + block, n)), slice(cs, min(cs + block, m)), False


def tile_shard(op):
    """The split of ``op``'s tiles over processes, or None (:class:`torchgp.distributed.ShardedKernel` sets one).

    A kernel may carry a ``tile_shard`` attribute: an object with ``owns(i) -> bool`` (whether this process
    evaluates the ``i``-th tile listed by :func:`_tiles`) and ``all_reduce(tensors, what)`` (sums the partial
    results over the processes, in place). Products and bilinear-form gradients then cover only this
    process's tiles before the sum.
    """
    return getattr(op.kernel, "tile_shard", None) if isinstance(op, KernelOperator) else None


def _tile(op: KernelOperator, rows: slice, cols: slice) -> torch.Tensor:
    """``K[rows, cols]`` (differentiable); a diagonal tile of a symmetric operator is evaluated as
    ``k(x, x)`` with one tensor, so the kernel sees ``x1 is x2`` (exact zero distances)."""
    x1 = op.x1[..., rows, :]
    x2 = x1 if (op.symmetric and rows == cols) else op.x2[..., cols, :]
    return op.kernel.evaluate_block(x1, x2, **op.params)


def kernel_inputs(op: KernelOperator) -> list[torch.Tensor]:
    """The tensors a kernel matrix is differentiable in: parameters, then ``x1``/``x2``, then tensor params.

    Only tensors with ``requires_grad`` are returned, each once (``x1 is x2`` counts once).

    Args:
        op: the kernel matrix.

    Returns:
        A list of tensors (leaves or not) through which ``op.block`` depends on what requires grad.
    """
    candidates = list(op.kernel.parameters()) + [op.x1, op.x2]
    candidates += [v for v in op.params.values() if isinstance(v, torch.Tensor)]
    seen, out = set(), []
    for t in candidates:
        if isinstance(t, torch.Tensor) and t.requires_grad and id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def kernel_matmul_nograd(op: KernelOperator, V: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``K @ V`` (or ``Kᵀ @ V``) block by block, without building a graph.

    Args:
        op: kernel matrix, ``(*batch, n, m)``.
        V: ``(*batch, m, k)`` (``(*batch, n, k)`` when ``transpose``).
        transpose: multiply by ``Kᵀ`` instead (a symmetric ``op`` uses the plain product).

    Returns:
        ``(*batch, n, k)`` (``(*batch, m, k)`` when ``transpose``).
    """
    n, m = op.shape[-2], op.shape[-1]
    batch = broadcast_shapes(op.batch_shape, V.shape[:-2])
    if transpose and op.symmetric:
        transpose = False
    out_rows = m if transpose else n
    with torch.no_grad():
        # An exponential stationary kernel multiplies from its feature rows, one reused tile buffer (kernel_tiles).
        rows_form = exp_tile_rows(op, batch) if settings.fast_kernel_tiles.on() else None
        if rows_form is not None:
            return exp_tile_matmul(op, rows_form, V, _tiles(op, feature_tile_side()), tile_shard(op), transpose)
        # Tiles run in the kernel's dtype (BLAS speed); their products are summed in V's dtype.
        Vk = V.to(op.dtype)
        out = torch.zeros(*batch, out_rows, V.shape[-1], dtype=V.dtype, device=V.device)
        shard = tile_shard(op)
        for index, (rows, cols, mirrored) in enumerate(_tiles(op)):
            if shard is not None and not shard.owns(index):
                continue
            T = _tile(op, rows, cols)
            # K_IJᵀ V_I is formed as (V_Iᵀ K_IJ)ᵀ: the same GEMM with K_IJ untransposed, measured 1.38 → 0.87
            # ns per entry (MKL, float32, 1024² tile, 33 columns).
            if transpose:  # Kᵀ G = Σ K_IJᵀ G_I
                out[..., cols, :] += (Vk[..., rows, :].mT @ T).mT.to(V.dtype)
                continue
            out[..., rows, :] += (T @ Vk[..., cols, :]).to(V.dtype)
            if mirrored:
                out[..., cols, :] += (Vk[..., rows, :].mT @ T).mT.to(V.dtype)
        if shard is not None:
            shard.all_reduce([out], "kernel products K V")
        return out


def kernel_bilinear_grads(
    op: KernelOperator, U: torch.Tensor, V: torch.Tensor, inputs: list[torch.Tensor], diag_weight=None
) -> list[torch.Tensor]:
    r"""``∂/∂inputs [Σ_j u_jᵀ K v_j + Σ_i w_i K_ii]``, recomputing ``K`` block by block.

    Args:
        op: kernel matrix ``(*batch, n, m)``.
        U: ``(*batch, n, k)``; V: ``(*batch, m, k)`` (constants, no graph needed).
        inputs: tensors to differentiate with respect to (see :func:`kernel_inputs`).
        diag_weight: optional ``(*batch, n)`` weights ``w`` of the diagonal term (square ``op`` only),
            evaluated by ``kernel.evaluate_block(..., diag=True)`` in O(n).

    Returns:
        One gradient per input (zeros for inputs the kernel does not use).
    """
    grads: list[torch.Tensor | None] = [None] * len(inputs)
    if not inputs:
        return []

    def accumulate(f):
        if not f.requires_grad:  # the block does not depend on the inputs
            return
        gs = torch.autograd.grad(f, inputs, allow_unused=True)
        for i, g in enumerate(gs):
            if g is not None:
                grads[i] = g if grads[i] is None else grads[i] + g

    U, V = U.detach().to(op.dtype), V.detach().to(op.dtype)
    shard = tile_shard(op)
    with torch.enable_grad():
        for index, (rows, cols, mirrored) in enumerate(_tiles(op)):
            if shard is not None and not shard.owns(index):
                continue
            # ⟨K_IJ, U_I V_Jᵀ⟩_F: the outer product is formed outside the graph, so the tile's
            # backward is a single elementwise product (Gardner et al. 2018, §4). A mirrored tile
            # also carries ⟨K_JI, U_J V_Iᵀ⟩ = ⟨K_IJ, V_I U_Jᵀ⟩: one GEMM on the stacked factors.
            if mirrored:
                W = (
                    torch.cat([U[..., rows, :], V[..., rows, :]], -1)
                    @ torch.cat([V[..., cols, :], U[..., cols, :]], -1).mT
                )
            else:
                W = U[..., rows, :] @ V[..., cols, :].mT
            K_t = _tile(op, rows, cols)
            accumulate((K_t * W.to(K_t.dtype)).sum())
        if diag_weight is not None and (shard is None or shard.owns(0)):  # the diagonal term goes with tile 0
            d = op.kernel.evaluate_block(op.x1, op.x2, diag=True, **op.params)
            accumulate((d * diag_weight.detach().to(d.dtype)).sum())
    out = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]
    if shard is not None:
        shard.all_reduce(out, "gradient bilinear forms")
    return out


class _BlockwiseMatmul(torch.autograd.Function):
    """``(op, V (*b,m,k), *inputs) → K V (*b,n,k)`` with blockwise backward."""

    @staticmethod
    def forward(ctx, op, V, *inputs):
        ctx.op, ctx.inputs = op, inputs
        ctx.save_for_backward(V)
        return kernel_matmul_nograd(op, V)

    @staticmethod
    @once_differentiable
    def backward(ctx, G):
        (V,) = ctx.saved_tensors
        op = ctx.op
        grad_V = None
        if ctx.needs_input_grad[1]:
            grad_V = kernel_matmul_nograd(op, G, transpose=True).sum_to_size(V.shape)  # ∂/∂V = Kᵀ G
        wanted = [t for t, need in zip(ctx.inputs, ctx.needs_input_grad[2:]) if need]
        grads = iter(kernel_bilinear_grads(op, G, V, wanted))  # ∂/∂θ ⟨G, K V⟩ = Σ_j g_jᵀ (∂K/∂θ) v_j
        rest = [next(grads) if need else None for need in ctx.needs_input_grad[2:]]
        return (None, grad_V, *rest)


def blockwise_matmul(op: KernelOperator, V: torch.Tensor) -> torch.Tensor:
    """``K @ V`` without holding ``K``, differentiable in ``V``, the kernel's parameters and inputs.

    Memory is ``O(n k + block²)`` forward and backward (tiles of ``settings.kernel_block_size``).
    Second derivatives are not supported (the backward is ``once_differentiable``).

    Args:
        op: kernel matrix ``(*batch, n, m)``.
        V: ``(*batch, m, k)``.

    Returns:
        ``(*batch, n, k)``.

    Example:
        >>> out = blockwise_matmul(KernelOperator(kernel, X, X), V)  # doctest: +SKIP
    """
    if V.shape[-2] != op.shape[-1]:
        raise ValueError(
            f"blockwise_matmul: V has {V.shape[-2]} rows but the kernel matrix is "
            f"{op.shape[-2]}x{op.shape[-1]}; pass V of shape (*batch, {op.shape[-1]}, k)."
        )
    return _BlockwiseMatmul.apply(op, V, *kernel_inputs(op))
