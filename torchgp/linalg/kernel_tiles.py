r"""Tile products ``K V`` of an exponential stationary kernel from its feature rows, with one buffer per product.

For a kernel ``K_ij = s · exp(c ‖a_i − b_j‖²)`` (``c < 0``; RBF, periodic, and a ``ScaleKernel`` over either) on
features ``a = φ(x1)``, ``b = φ(x2)`` (``x / ℓ`` for RBF), the exponent of every tile is one GEMM of augmented rows
formed once per product for all ``n`` inputs,

.. math:: c\,r^2_{ij} + \log s = [\,a_i,\ c\lVert a_i\rVert^2,\ 1\,]\cdot [\,-2c\,b_j,\ 1,\ c\lVert b_j\rVert^2 + \log s\,]

(the same identity as :func:`torchgp.kernels._fused.exp_sq_dist`, on features shifted by one data point so that
large offsets cancel exactly). A tile is then three passes over one reused ``block × block`` buffer: the exponent
GEMM written into it, ``exp`` in place, and the GEMMs with the columns (two for a mirrored tile of a symmetric
matrix, ``K_IJ V_J`` and ``K_IJᵀ V_I = (V_Iᵀ K_IJ)ᵀ``), with none of the kernel module's per-tile work (feature
scaling, constraint transforms, autograd bookkeeping) and no allocation per tile. Measured (ARD RBF, d = 8,
float32, 33 columns, 1 thread, n = 8192): see ``benchmarks/README.md`` ("Kernel tiles from feature rows").

Tiles follow the kernel operator's listing (``torchgp.linalg.operators.kernel._tiles``: the same tiles, so a
sharded kernel's ``tile_shard`` keeps its meaning); each tile's product is formed in the kernel's dtype and added into the result
in ``V``'s dtype (float64 accumulation for float32 tiles under a float64 solve).
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes

__all__ = ["exp_tile_rows", "exp_tile_matmul", "feature_tile_side"]


def feature_tile_side() -> int:
    """Side of this route's tiles: half ``settings.kernel_block_size`` (512 by default).

    A tile here is one buffer and three passes, with no per-tile module work to amortise, so it pays to keep the
    buffer within the core's cache: measured (``benchmarks/kernel_tiles.py --n 20000 --threads 1 --block 512 1024``,
    CPU time relative to the module's 1024-tiles) 0.63 at side 512 against 0.75 at 1024 with 33 columns, 0.58
    against 0.74 with one column.
    """
    return max(1, int(settings.kernel_block_size.value()) // 2)


def _select(x: torch.Tensor, kernel) -> torch.Tensor:
    dims = getattr(kernel, "active_dims", None)
    return x if dims is None else x.index_select(-1, dims)


def _qualname(obj, method: str) -> str | None:
    """The qualified name of the function ``type(obj).method`` (None if it has none): which class defines it."""
    return getattr(getattr(type(obj), method, None), "__qualname__", None)


def _exp_form(kernel):
    """``(base, outer)``: the exponential stationary kernel and the ``ScaleKernel`` around it (or None), or None.

    Recognised through the kernels' own hooks of the fused node (``Kernel._exp_rate``, ``ScaleKernel._fuses``):
    ``base`` evaluates ``exp(c ‖φ(x) − φ(x')‖²)`` with its standard forward, and ``outer``, if any, hands its
    outputscale to it unchanged. Anything else (products, overridden forwards, unfused settings) returns None.
    """
    outer = None
    kernel = getattr(kernel, "tile_delegate", None) or kernel  # a wrapper that evaluates as its base kernel
    if _qualname(kernel, "forward") == "ScaleKernel.forward":
        if not kernel._fuses(False):
            return None
        outer, kernel = kernel, kernel.base_kernel
    if getattr(kernel, "_exp_rate", lambda: None)() is None:
        return None
    if _qualname(kernel, "evaluate_block") != "Kernel.evaluate_block" or not hasattr(kernel, "scaled"):
        return None
    if outer is not None and _qualname(outer, "evaluate_block") != "Kernel.evaluate_block":
        return None
    return kernel, outer


def exp_tile_rows(op, batch: torch.Size):
    r"""The augmented rows of ``op``'s exponent, or None when ``op`` is not an exponential stationary kernel.

    Args:
        op: ``(*batch, n, m)`` kernel matrix.
        batch: the batch shape of the product (``op``'s broadcast with the columns').

    Returns:
        ``(left (*batch, n, p), right_t (*batch, p, m), log_s (*batch) or None)`` with ``p = d' + 2``
        (``d'`` features): ``left[i] · right_t[:, j] = c r²_ij + log s`` (module docstring), or None.
    """
    if op.params:
        return None
    form = _exp_form(op.kernel)
    if form is None:
        return None
    base, outer = form
    c = float(base._exp_rate())
    x1 = op.x1 if outer is None else _select(op.x1, outer)
    a = base.scaled(_select(x1, base))
    if op.symmetric:
        b = a
    else:
        x2 = op.x2 if outer is None else _select(op.x2, outer)
        b = base.scaled(_select(x2, base))
    # one finite point amid the data as origin: differences, so r², do not change, and ‖a‖² stays small
    shift = torch.nan_to_num(a[..., :1, :], 0.0, 0.0, 0.0)
    a = a - shift
    b = a if op.symmetric else b - shift
    log_s = None if outer is None else outer.outputscale.log()
    a2c = a.square().sum(-1, keepdim=True).mul_(c)  # c‖a‖², (*batch, n, 1)
    b2c = a2c if op.symmetric else b.square().sum(-1, keepdim=True).mul_(c)
    if log_s is not None:
        b2c = b2c + log_s[..., None, None]
    left = torch.cat([a, a2c, torch.ones_like(a2c)], -1)
    wide = broadcast_shapes(b.shape[:-2], b2c.shape[:-2])  # s may carry a batch the features lack
    b = b.expand(*wide, *b.shape[-2:])
    right = torch.cat([b * (-2 * c), torch.ones_like(b[..., :1]), b2c.expand(*wide, *b2c.shape[-2:])], -1)
    p = left.shape[-1]
    left = left.expand(*batch, op.shape[-2], p).contiguous()
    right_t = right.expand(*batch, op.shape[-1], p).mT.contiguous()
    if log_s is not None:
        log_s = log_s.expand(batch).contiguous()
    return left, right_t, log_s


def _mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``a @ b`` written into ``out`` (all ``(flat, ·, ·)``); one batch member as a plain GEMM (BLAS threads it)."""
    if a.shape[0] == 1:
        torch.mm(a[0], b[0], out=out[0])
        return out
    return torch.bmm(a, b, out=out)


def exp_tile_matmul(op, rows, V: torch.Tensor, tiles, shard=None, transpose: bool = False) -> torch.Tensor:
    """``K @ V`` (or ``Kᵀ @ V``) tile by tile from :func:`exp_tile_rows`, without a graph.

    Args:
        op: ``(*batch, n, m)`` :class:`~torchgp.linalg.operators.KernelOperator`; rows: ``exp_tile_rows(op, batch)``.
        V: ``(*batch, m, k)`` (``(*batch, n, k)`` when ``transpose``).
        tiles: the ``(rows, cols, mirrored)`` slices of the tiles (``operators.kernel._tiles(op)``).
        shard: the kernel's ``tile_shard`` or None: only the tiles it ``owns`` are multiplied, then summed
            over the processes with its ``all_reduce``.
        transpose: multiply by ``Kᵀ`` (the caller passes False for a symmetric ``op``).

    Returns:
        ``(*batch, n, k)`` (``(*batch, m, k)`` when ``transpose``) in ``V``'s dtype.
    """
    left, right_t, log_s = rows
    batch = left.shape[:-2]
    n, m, k = op.shape[-2], op.shape[-1], V.shape[-1]
    flat = int(torch.Size(batch).numel())
    L = left.reshape(flat, n, -1)
    Rt = right_t.reshape(flat, -1, m)
    Vk = V.to(op.dtype).expand(*batch, *V.shape[-2:]).reshape(flat, *V.shape[-2:])
    VkT = Vk.mT.contiguous()  # (flat, ·, k)ᵀ: the mirrored products' left factor
    diag = None if log_s is None else log_s.reshape(flat, 1)
    out = torch.zeros(flat, m if transpose else n, k, dtype=V.dtype, device=V.device)
    block = None
    buf = scratch = scratch_t = None
    for index, (rs, cs, mirrored) in enumerate(tiles):
        if shard is not None and not shard.owns(index):
            continue
        r, c = rs.stop - rs.start, cs.stop - cs.start
        if buf is None:
            block = max(r, c)
            buf = torch.empty(flat * block * block, dtype=op.dtype, device=V.device)
            scratch = torch.empty(flat * block * k, dtype=op.dtype, device=V.device)
            scratch_t = torch.empty(flat * block * k, dtype=op.dtype, device=V.device)
        E = _mm(L[:, rs], Rt[:, :, cs], buf[: flat * r * c].view(flat, r, c))  # c r² + log s
        if op.symmetric and rs == cs:  # r²_ii = 0 exactly: K_ii = s
            if diag is None:
                E.diagonal(dim1=-2, dim2=-1).zero_()
            else:
                E.diagonal(dim1=-2, dim2=-1).copy_(diag.expand(flat, r))
        E.exp_()
        if transpose or mirrored:  # K_IJᵀ V_I = (V_Iᵀ K_IJ)ᵀ: the GEMM with K_IJ untransposed
            KtV = _mm(VkT[:, :, rs], E, scratch_t[: flat * k * c].view(flat, k, c))
            out[:, cs].add_(KtV.mT)
        if not transpose:
            KV = _mm(E, Vk[:, cs], scratch[: flat * r * k].view(flat, r, k))
            out[:, rs].add_(KV)
    if shard is not None:
        shard.all_reduce([out], "kernel products K V")
    return out.reshape(*batch, *out.shape[-2:])
