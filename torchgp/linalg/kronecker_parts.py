r"""Recognising ``A = K_1 ⊗ K_2 + S_1 ⊗ S_2`` among the operators: the parts :mod:`torchgp.linalg.kronecker_solve`
solves with.

A :class:`~torchgp.linalg.operators.KroneckerProductAddedDiag` with per-factor diagonals (``σ² I``, ``I ⊗ D_t``)
or a sum of two two-factor Kronecker products one of which has a diagonal factor (the noise ``I ⊗ Σ_t`` of any
rank) is such a sum; :func:`is_kronecker_sum` says so from types and shapes alone, :func:`kronecker_sum` returns
the dense parts.
"""

from __future__ import annotations

from torchgp.linalg.operators import (
    ConstantDiagOperator,
    DiagOperator,
    KroneckerProductAddedDiag,
    KroneckerProductOperator,
    Operator,
)
from torchgp.linalg.operators.structured import SumOperator

__all__ = ["KroneckerSum", "is_kronecker_sum", "kronecker_sum"]


class KroneckerSum:
    """The parts of ``K_1 ⊗ K_2 + S_1 ⊗ S_2``.

    Attributes:
        K1: ``(*batch, p, p)`` dense; K2: ``(*batch, q, q)`` dense.
        S1, S2: None (identity), a diagonal ``(*batch, p)`` / ``(*batch, q)`` (``diag1``/``diag2`` True), or a
            dense matrix ``(*batch, p, p)`` / ``(*batch, q, q)``.
    """

    def __init__(self, K1, K2, S1=None, S2=None, diag1: bool = True, diag2: bool = True):
        self.K1, self.K2, self.S1, self.S2 = K1, K2, S1, S2
        self.diag1, self.diag2 = diag1, diag2

    @property
    def sizes(self) -> tuple[int, int]:
        return self.K1.shape[-1], self.K2.shape[-1]


def _noise_factor(f: Operator):
    """A Kronecker factor of the noise as ``(tensor or None for the identity, is_diagonal)``."""
    if isinstance(f, ConstantDiagOperator) and bool((f.diag_constant == 1).all()):
        return None, True
    if isinstance(f, DiagOperator):
        return f.diagonal(), True
    return f.to_dense(), False


def _kronecker_terms(op):
    """``(signal factors, noise factors or diagonals, from_diagonals)`` if ``op`` is ``K_1 ⊗ K_2 + S_1 ⊗ S_2``, else
    None; nothing is made dense (the structural test of :func:`kronecker_sum`)."""
    if isinstance(op, KroneckerProductAddedDiag) and op.diag_factors is not None and len(op.base.factors) == 2:
        f1, f2 = op.base.factors
        if f1.shape[-1] != f1.shape[-2] or f2.shape[-1] != f2.shape[-2]:
            return None
        return (f1, f2), tuple(op.diag_factors), True
    if not (isinstance(op, SumOperator) and len(op.operators) == 2):
        return None
    a, b = op.operators
    if not all(isinstance(x, KroneckerProductOperator) and len(x.factors) == 2 for x in (a, b)):
        return None
    if not all(f.shape[-1] == f.shape[-2] for f in (*a.factors, *b.factors)):
        return None
    if [f.shape[-1] for f in a.factors] != [f.shape[-1] for f in b.factors]:
        return None
    if _is_noise(b):
        signal, noise = a, b
    elif _is_noise(a):
        signal, noise = b, a
    else:
        return None
    return tuple(signal.factors), tuple(noise.factors), False


def is_kronecker_sum(op) -> bool:
    """Whether :func:`kronecker_sum` recognises ``op`` (cheap: only types and shapes are read)."""
    return _kronecker_terms(op) is not None


def kronecker_sum(op) -> KroneckerSum | None:
    """Recognise ``op`` as ``K_1 ⊗ K_2 + S_1 ⊗ S_2`` (two square factors each), else None.

    Accepts a :class:`KroneckerProductAddedDiag` with per-factor diagonals (``σ² I``, ``I ⊗ D_t``) and a
    :class:`SumOperator` of two two-factor :class:`KroneckerProductOperator` one of which has a diagonal factor
    (the noise, e.g. ``I ⊗ Σ_t`` with ``Σ_t`` of any rank).
    """
    terms = _kronecker_terms(op)
    if terms is None:
        return None
    (f1, f2), noise, from_diagonals = terms
    if from_diagonals:
        return KroneckerSum(f1.to_dense(), f2.to_dense(), *noise)
    (s1, diag1), (s2, diag2) = (_noise_factor(f) for f in noise)
    return KroneckerSum(f1.to_dense(), f2.to_dense(), s1, s2, diag1, diag2)


def _is_noise(kron: KroneckerProductOperator) -> bool:
    return any(isinstance(f, DiagOperator) for f in kron.factors)
