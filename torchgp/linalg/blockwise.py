r"""Kernel-matrix products computed block by block: ``K`` and ``∂K/∂θ`` are never held whole.

Forward, ``K @ V`` is formed from row blocks ``K[s:e, :]`` of ``settings.kernel_block_size`` rows
(memory ``O(block · m)``). Backward, the gradient of a scalar ``g(K V)`` with respect to the
kernel's parameters θ and inputs is the derivative of the bilinear form

.. math::
    \frac{\partial}{\partial\theta} \sum_i u_i^\top K(\theta)\, v_i
        = \sum_{\text{blocks } b} \frac{\partial}{\partial\theta} \big\langle K_b(\theta),\, U_b V^\top \big\rangle_F,
    \qquad U = \frac{\partial g}{\partial (KV)},

so each block is recomputed under ``torch.enable_grad()`` and differentiated by
``torch.autograd.grad`` (Gardner et al. 2018, §4 "derivatives of the bilinear form"; Wang et al.
2019, §3 partitioned kernel products). Only one block's graph is alive at a time.

The same bilinear-form gradients are what the iterative marginal likelihood needs
(:func:`operator_bilinear_grads`), with the noise diagonal of an
:class:`~torchgp.linalg.operators.AddedDiagOperator` receiving ``Σ_i u_i ⊙ v_i``.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from torchgp import settings
from torchgp.linalg.operators import AddedDiagOperator, DenseOperator, KernelOperator, Operator, as_operator

__all__ = [
    "blockwise_matmul",
    "added_diag_matmul",
    "kernel_inputs",
    "kernel_matmul_nograd",
    "kernel_bilinear_grads",
    "operator_bilinear_grads",
    "split_operator",
]


def _row_blocks(n: int):
    block = int(settings.kernel_block_size.value())
    for start in range(0, n, block):
        yield start, min(start + block, n)


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
    batch = torch.broadcast_shapes(op.batch_shape, V.shape[:-2])
    with torch.no_grad():
        if transpose and not op.symmetric:
            # Kᵀ G = Σ_b K_bᵀ G_b over row blocks b.
            out = torch.zeros(*batch, m, V.shape[-1], dtype=V.dtype, device=V.device)
            for s, e in _row_blocks(n):
                out += op.block(s, e).to(V.dtype).mT @ V[..., s:e, :]
            return out
        out = torch.empty(*batch, n, V.shape[-1], dtype=V.dtype, device=V.device)
        for s, e in _row_blocks(n):
            out[..., s:e, :] = op.block(s, e).to(V.dtype) @ V
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

    U, V = U.detach(), V.detach()
    with torch.enable_grad():
        for s, e in _row_blocks(op.shape[-2]):
            # ⟨K_b, U_b Vᵀ⟩_F: the outer product is formed outside the graph, so the block's
            # backward is a single elementwise product (Gardner et al. 2018, §4).
            W = U[..., s:e, :] @ V.mT
            K_b = op.block(s, e)
            accumulate((K_b * W.to(K_b.dtype)).sum())
        if diag_weight is not None:
            d = op.kernel.evaluate_block(op.x1, op.x2, diag=True, **op.params)
            accumulate((d * diag_weight.detach().to(d.dtype)).sum())
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]


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

    Memory is ``O(n · block)`` forward and backward (``settings.kernel_block_size`` rows per block).
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


def added_diag_matmul(op: AddedDiagOperator, V: torch.Tensor) -> torch.Tensor:
    """``(K + diag(d)) @ V`` with a blockwise ``K``; ``d`` gets ``Σ_j g_ij v_ij`` from autograd.

    Args:
        op: ``AddedDiagOperator`` over a ``KernelOperator`` (or a dense base), ``(*batch, n, n)``.
        V: ``(*batch, n, k)``.

    Returns:
        ``(*batch, n, k)``.
    """
    base = op.base
    KV = blockwise_matmul(base, V) if isinstance(base, KernelOperator) else base.matmul(V)
    return KV + op.diag.unsqueeze(-1) * V


# --------------------------------------------------------------------------- operator-level helpers
def split_operator(op) -> tuple[Operator, torch.Tensor | None]:
    """``K + diag(d)`` → ``(base, d)``; any other operator → ``(op, None)``.

    Raises:
        TypeError: an operator kind the iterative path does not know.
    """
    op = as_operator(op)
    if isinstance(op, AddedDiagOperator):
        base, d = op.base, op.diag
    else:
        base, d = op, None
    if not isinstance(base, (KernelOperator, DenseOperator)):
        raise TypeError(
            f"The iterative solvers accept KernelOperator, DenseOperator, or either plus a diagonal "
            f"(AddedDiagOperator); got {type(base).__name__}. Convert it with torchgp.linalg.DenseOperator(op.to_dense())."
        )
    return base, d


def base_inputs(base: Operator) -> list[torch.Tensor]:
    """Differentiable tensors behind ``base``: the kernel's (see :func:`kernel_inputs`) or the dense tensor."""
    if isinstance(base, KernelOperator):
        return kernel_inputs(base)
    return [base.tensor] if base.tensor.requires_grad else []


def operator_bilinear_grads(base: Operator, inputs, U, V, diag_weight=None) -> list[torch.Tensor]:
    """Gradients of ``Σ_j u_jᵀ K v_j + Σ_i w_i K_ii`` w.r.t. the tensors behind ``base``.

    Args:
        base: ``KernelOperator`` or ``DenseOperator``, ``(*batch, n, n)``.
        inputs: from :func:`base_inputs`.
        U, V: ``(*batch, n, k)``.
        diag_weight: ``(*batch, n)`` weights of the diagonal term, or None.

    Returns:
        One gradient per input.
    """
    if not inputs:
        return []
    if isinstance(base, KernelOperator):
        return kernel_bilinear_grads(base, U, V, inputs, diag_weight)
    grad = U @ V.mT  # ∂/∂K Σ_j u_jᵀ K v_j = Σ_j u_j v_jᵀ
    if diag_weight is not None:
        grad = grad + torch.diag_embed(diag_weight)
    return [grad.to(inputs[0].dtype).sum_to_size(inputs[0].shape)]
