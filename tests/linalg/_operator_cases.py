"""Operator cases for the linalg tests: each builds an operator and its dense reference from the same tensors."""

from __future__ import annotations

import dataclasses

import torch

from torchgp.linalg.operators import (
    AddedDiagOperator,
    BlockDiagOperator,
    ConstantDiagOperator,
    ConstantMulOperator,
    DenseOperator,
    DiagOperator,
    KernelOperator,
    KroneckerProductAddedDiag,
    KroneckerProductOperator,
    LowRankRootOperator,
    ProductOperator,
    SumOperator,
)

B = 2  # batch size of every case
DT = torch.float64


def spd(W):
    """A positive definite matrix from a free one: ``W Wᵀ / m + I``."""
    return W @ W.mT / W.shape[-1] + torch.eye(W.shape[-2], dtype=W.dtype)


def kron_dense(*mats):
    out = mats[0]
    for M in mats[1:]:
        n1, m1, n2, m2 = out.shape[-2], out.shape[-1], M.shape[-2], M.shape[-1]
        out = out[..., :, None, :, None] * M[..., None, :, None, :]
        out = out.reshape(*out.shape[:-4], n1 * n2, m1 * m2)
    return out


def _rbf():
    from torchgp.kernels import LinearKernel, RBFKernel

    rbf = RBFKernel()
    rbf.lengthscale = 0.7
    return (rbf + LinearKernel()).double()  # the linear part makes the diagonal depend on X


_KERNEL = None


def kernel():
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _rbf()
    return _KERNEL


@dataclasses.dataclass
class Case:
    name: str
    shapes: list  # shapes of the free tensors
    make: callable  # tensors -> operator
    dense: callable  # tensors -> dense reference
    spd: bool = True

    def tensors(self, seed: int = 0, requires_grad: bool = False):
        g = torch.Generator().manual_seed(seed)
        out = []
        for s in self.shapes:
            t = torch.randn(*s, generator=g, dtype=DT)
            out.append(t.requires_grad_(requires_grad))
        return out


def _pos(t):
    """Positive values from a free tensor (smooth, bounded away from 0)."""
    return 0.5 + t.square()


CASES = [
    Case("dense", [(B, 6, 6)], lambda W: DenseOperator(spd(W)), lambda W: spd(W)),
    Case(
        "kernel",
        [(B, 6, 1)],
        lambda X: KernelOperator(kernel(), X, X).add_jitter(0.1),
        lambda X: kernel()(X, X).to_dense() + 0.1 * torch.eye(6, dtype=DT),
    ),
    Case(
        "added_diag",
        [(B, 6, 6), (B, 6)],
        lambda W, d: AddedDiagOperator(DenseOperator(spd(W)), _pos(d)),
        lambda W, d: spd(W) + torch.diag_embed(_pos(d)),
    ),
    Case("diag", [(B, 6)], lambda d: DiagOperator(_pos(d)), lambda d: torch.diag_embed(_pos(d))),
    Case(
        "constant_diag",
        [(B, 1)],
        lambda c: ConstantDiagOperator(_pos(c), 6),
        lambda c: _pos(c)[..., None] * torch.eye(6, dtype=DT),
    ),
    Case("low_rank", [(B, 6, 2)], lambda R: LowRankRootOperator(R), lambda R: R @ R.mT, spd=False),
    Case(
        "low_rank_added_diag",
        [(B, 6, 2), (B, 6)],
        lambda R, d: LowRankRootOperator(R).add_diagonal(_pos(d)),
        lambda R, d: R @ R.mT + torch.diag_embed(_pos(d)),
    ),
    Case(
        "sum",
        [(B, 6, 6), (B, 6, 2)],
        lambda W, R: SumOperator(DenseOperator(spd(W)), LowRankRootOperator(R)),
        lambda W, R: spd(W) + R @ R.mT,
    ),
    Case(
        "product",
        [(B, 6, 6), (B, 6, 6)],
        lambda W, V: ProductOperator(DenseOperator(spd(W)), DenseOperator(spd(V))),
        lambda W, V: spd(W) * spd(V),
    ),
    Case(
        "product_low_rank",
        [(B, 6, 2), (B, 6, 6)],
        lambda R, W: LowRankRootOperator(R).mul(DenseOperator(spd(W))).add_jitter(0.5),
        lambda R, W: (R @ R.mT) * spd(W) + 0.5 * torch.eye(6, dtype=DT),
    ),
    Case(
        "constant_mul",
        [(B, 6, 6), (B,)],
        lambda W, c: ConstantMulOperator(DenseOperator(spd(W)), _pos(c)),
        lambda W, c: spd(W) * _pos(c)[..., None, None],
    ),
    Case(
        "kronecker",
        [(B, 2, 2), (B, 3, 3)],
        lambda A, C: KroneckerProductOperator(spd(A), spd(C)),
        lambda A, C: kron_dense(spd(A), spd(C)),
    ),
    Case(
        "kronecker3",
        [(2, 2), (B, 3, 3), (2, 2)],
        lambda A, C, D: KroneckerProductOperator(spd(A), DenseOperator(spd(C)), spd(D)),
        lambda A, C, D: kron_dense(spd(A), spd(C), spd(D)).expand(B, 12, 12),
    ),
    Case(
        "kronecker_added_const",
        [(B, 2, 2), (B, 3, 3), (B, 1)],
        lambda A, C, s: KroneckerProductOperator(spd(A), spd(C)).add_diagonal(_pos(s)),
        lambda A, C, s: kron_dense(spd(A), spd(C)) + _pos(s)[..., None] * torch.eye(6, dtype=DT),
    ),
    Case(
        "kronecker_added_task_diag",
        [(B, 2, 2), (B, 3, 3), (B, 2)],
        lambda A, C, dt: KroneckerProductAddedDiag(
            KroneckerProductOperator(spd(A), spd(C)), diag_factors=[_pos(dt), None]
        ),
        lambda A, C, dt: kron_dense(spd(A), spd(C)) + torch.diag_embed(_pos(dt).repeat_interleave(3, -1)),
    ),
    Case(
        "kronecker_diag_factor_added",
        [(B, 2), (B, 3, 3), (B, 2)],
        lambda a, C, dt: KroneckerProductAddedDiag(
            KroneckerProductOperator(DiagOperator(_pos(a)), spd(C)), diag_factors=[_pos(dt), None]
        ),
        lambda a, C, dt: (
            kron_dense(torch.diag_embed(_pos(a)), spd(C)) + torch.diag_embed(_pos(dt).repeat_interleave(3, -1))
        ),
    ),
    Case(
        "block_diag",
        [(B, 3, 2, 2)],
        lambda W: BlockDiagOperator(DenseOperator(spd(W))),
        lambda W: torch.stack([torch.block_diag(*spd(W)[b]) for b in range(B)]),
    ),
]

CASE_IDS = [c.name for c in CASES]
SPD_CASES = [c for c in CASES if c.spd]
SPD_IDS = [c.name for c in SPD_CASES]
