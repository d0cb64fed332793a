r"""Kernel-matrix products computed block by block: ``K`` and ``∂K/∂θ`` are never held whole.

The kernel operator itself, its tiles, the blockwise product and its backward live in
:mod:`torchgp.linalg.operators.kernel` (re-exported here); this module adds the operator-level
helpers of the iterative path.

The same bilinear-form gradients are what the iterative marginal likelihood needs
(:func:`operator_bilinear_grads`), with the noise diagonal of an
:class:`~torchgp.linalg.operators.AddedDiagOperator` receiving ``Σ_i u_i ⊙ v_i``.
"""

from __future__ import annotations

import torch

from torchgp.linalg.operators import AddedDiagOperator, DenseOperator, Operator, as_operator
from torchgp.linalg.operators.kernel import (  # noqa: F401  (re-exported: the blockwise kernel products)
    KernelOperator,
    _BlockwiseMatmul,
    _tile,
    _tiles,
    blockwise_matmul,
    kernel_bilinear_grads,
    kernel_inputs,
    kernel_matmul_nograd,
    tile_shard,
)

__all__ = [
    "blockwise_matmul",
    "added_diag_matmul",
    "kernel_inputs",
    "kernel_matmul_nograd",
    "kernel_bilinear_grads",
    "operator_bilinear_grads",
    "split_operator",
]


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
