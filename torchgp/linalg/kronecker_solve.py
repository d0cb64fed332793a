r"""Exact solves with ``A = K_1 ⊗ K_2 + S_1 ⊗ S_2`` from the eigendecompositions of the two factors.

The multitask covariance ``K_x ⊗ K_t`` plus noise ``I ⊗ Σ_t`` (or ``σ² I``, or ``Σ_t ⊗ I`` for the
non-interleaved order) is such a sum. With ``S_i = L_i L_iᵀ`` and ``L_i⁻¹ K_i L_i⁻ᵀ = Q_i Λ_i Q_iᵀ``, put
``P_i = L_i⁻ᵀ Q_i`` (so ``P_iᵀ K_i P_i = Λ_i`` and ``P_iᵀ S_i P_i = I``); then

.. math::
    A^{-1} = (P_1 \otimes P_2)\, W\, (P_1 \otimes P_2)^\top,\qquad W = (\Lambda_1 \otimes \Lambda_2 + I)^{-1},

    \log|A| = \textstyle\sum_{kc} \log(\lambda_{1k}\lambda_{2c} + 1) + q \log|S_1| + p \log|S_2|

(``p``, ``q`` the factor sizes; Saatçi 2012, ch. 5; Stegle et al. 2011). In matrix form (row-major
``vec``, ``y = vec(Y)``, ``Y (p, q)``) the solve is ``A⁻¹ y = vec(P_1 [W ∘ (P_1ᵀ Y P_2)] P_2ᵀ)``. Nothing of
size ``pq × pq`` is formed: time ``O(p³ + q³ + pq(p + q))``, memory ``O(p² + q² + pq)``.

The backward of ``rᵀA⁻¹r + log|A|`` is closed-form (R&W 2006, eq. 5.9, ``∂/∂A = A⁻¹ − ααᵀ``, contracted
through ``A``'s Kronecker structure, ``α = vec(Α)``):

.. math::
    \frac{\partial \log|A|}{\partial K_1} = P_1\, \mathrm{diag}(W \lambda_2)\, P_1^\top,\quad
    \frac{\partial \log|A|}{\partial S_1} = P_1\, \mathrm{diag}(W 1)\, P_1^\top,\quad
    \frac{\partial\, r^\top A^{-1} r}{\partial K_1} = -Α K_2 Α^\top,\quad
    \frac{\partial\, r^\top A^{-1} r}{\partial S_1} = -Α S_2 Α^\top

and the same with the roles of the factors exchanged. No gradient passes through an eigendecomposition,
so repeated eigenvalues (a low-rank task covariance) are harmless.
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.errors import ShapeError
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.linalg.operators import (
    ConstantDiagOperator,
    DiagOperator,
    KroneckerProductAddedDiag,
    KroneckerProductOperator,
    Operator,
)
from torchgp.linalg.operators.structured import SumOperator

__all__ = ["KroneckerSum", "kronecker_sum", "kronecker_inv_quad_logdet", "KroneckerEig"]


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


def kronecker_sum(op) -> KroneckerSum | None:
    """Recognise ``op`` as ``K_1 ⊗ K_2 + S_1 ⊗ S_2`` (two square factors each), else None.

    Accepts a :class:`KroneckerProductAddedDiag` with per-factor diagonals (``σ² I``, ``I ⊗ D_t``) and a
    :class:`SumOperator` of two two-factor :class:`KroneckerProductOperator` one of which has a diagonal factor
    (the noise, e.g. ``I ⊗ Σ_t`` with ``Σ_t`` of any rank).
    """
    if isinstance(op, KroneckerProductAddedDiag) and op.diag_factors is not None and len(op.base.factors) == 2:
        f1, f2 = op.base.factors
        if f1.shape[-1] != f1.shape[-2] or f2.shape[-1] != f2.shape[-2]:
            return None
        d1, d2 = op.diag_factors
        return KroneckerSum(f1.to_dense(), f2.to_dense(), d1, d2)
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
    (s1, diag1), (s2, diag2) = (_noise_factor(f) for f in noise.factors)
    return KroneckerSum(signal.factors[0].to_dense(), signal.factors[1].to_dense(), s1, s2, diag1, diag2)


def _is_noise(kron: KroneckerProductOperator) -> bool:
    return any(isinstance(f, DiagOperator) for f in kron.factors)


def _factor_eig(K, S, diag: bool):
    """``(λ (*b, p), P (*b, p, p), log|S| (*b) or 0)`` with ``Pᵀ K P = diag λ`` and ``Pᵀ S P = I``."""
    if S is None:
        lam, Q = torch.linalg.eigh(K)
        return lam.clamp_min(0), Q, 0.0
    if diag:  # S = diag(s): P = S^{-1/2} Q, with Q the eigenvectors of S^{-1/2} K S^{-1/2}
        r = S.rsqrt()
        lam, Q = torch.linalg.eigh(K * r.unsqueeze(-1) * r.unsqueeze(-2))
        return lam.clamp_min(0), Q * r.unsqueeze(-1), S.log().sum(-1)
    L = psd_safe_cholesky(S)  # S = L Lᵀ: P = L⁻ᵀ Q, with Q the eigenvectors of L⁻¹ K L⁻ᵀ
    M = torch.linalg.solve_triangular(L, torch.linalg.solve_triangular(L, K, upper=False).mT, upper=False)
    lam, Q = torch.linalg.eigh((M + M.mT) / 2)
    P = torch.linalg.solve_triangular(L.mT, Q, upper=True)
    return lam.clamp_min(0), P, 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)


class KroneckerEig:
    """Eigendecompositions of both factors of ``A = K_1 ⊗ K_2 + S_1 ⊗ S_2`` (computed once, outside autograd).

    Attributes:
        lam1 ``(*b, p)``, P1 ``(*b, p, p)``, lam2 ``(*b, q)``, P2 ``(*b, q, q)``; W ``(*b, p, q)`` with
        ``W_kc = 1 / (λ_1k λ_2c + 1)``; logdet ``(*b)``.
    """

    def __init__(self, parts: KroneckerSum):
        def detached(x):
            return None if x is None else x.detach()

        with torch.no_grad():
            self.lam1, self.P1, ld1 = _factor_eig(parts.K1.detach(), detached(parts.S1), parts.diag1)
            self.lam2, self.P2, ld2 = _factor_eig(parts.K2.detach(), detached(parts.S2), parts.diag2)
            p, q = parts.sizes
            prod = self.lam1.unsqueeze(-1) * self.lam2.unsqueeze(-2)
            self.W = 1 / (prod + 1)
            self.logdet = torch.log1p(prod).sum((-2, -1)) + q * ld1 + p * ld2
        self.sizes = (p, q)

    def solve_matrix(self, Y: torch.Tensor) -> torch.Tensor:
        """``A⁻¹ vec(Y)`` as a matrix: ``Y (*b, p, q) → (*b, p, q)``, ``P_1 [W ∘ (P_1ᵀ Y P_2)] P_2ᵀ``."""
        P1, P2 = self.P1, self.P2
        return P1 @ (self.W * (P1.mT @ Y @ P2)) @ P2.mT

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``A⁻¹ rhs`` for ``rhs (*b, pq, k)`` → ``(*b, pq, k)``."""
        p, q = self.sizes
        k = rhs.shape[-1]
        Y = rhs.movedim(-1, -2).reshape(*rhs.shape[:-2], k, p, q)
        P1, P2, W = self.P1.unsqueeze(-3), self.P2.unsqueeze(-3), self.W.unsqueeze(-3)
        X = P1 @ (W * (P1.mT @ Y @ P2)) @ P2.mT
        return X.reshape(*X.shape[:-2], p * q).movedim(-2, -1)


def _congruence(P, v):
    """``P diag(v) Pᵀ`` for ``P (*b, p, p)``, ``v (*b, p)``."""
    return (P * v.unsqueeze(-2)) @ P.mT


def _quad_term(A, M, diag: bool, left: bool):
    """``Σ_k Α_k M Α_kᵀ`` (``left``) or ``Σ_k Α_kᵀ M Α_k``, ``A (*b, k, p, q)``; ``M`` None = I, or diagonal."""
    X = A if left else A.mT
    if M is None:
        return (X @ X.mT).sum(-3)
    if diag:
        return ((X * M.unsqueeze(-2).unsqueeze(-3)) @ X.mT).sum(-3)
    return (X @ M.unsqueeze(-3) @ X.mT).sum(-3)


# The small factor (size q) at most this large: solve per eigenvalue of it, with q Choleskys of the large factor,
# instead of one eigendecomposition of the large factor. Measured single-threaded in float64: eigh + one GEMM of an
# n × n matrix cost 8.3× (n = 2000) and 6.3× (n = 1000) a Cholesky plus a cholesky_inverse of it.
_MAX_TASKS_CHOLESKY = 6


def _dense_noise(S, diag: bool, like: torch.Tensor) -> torch.Tensor:
    if S is None:
        return torch.eye(like.shape[-1], dtype=like.dtype, device=like.device)
    return torch.diag_embed(S) if diag else S


class _KroneckerInvQuadLogdet(torch.autograd.Function):
    """``(K1, K2, S1, S2, Y (*b, k, p, q)) → (Σ_k vec(Y_k)ᵀ A⁻¹ vec(Y_k) (*b), log|A| (*b))``.

    ``method="eig"``: eigendecompositions of both factors. ``method="chol"``: eigendecomposition of the second
    (small) factor only; with ``P_2ᵀ K_2 P_2 = Λ_2``, ``P_2ᵀ S_2 P_2 = I``,
    ``A = (I ⊗ P_2)^{-ᵀ} blockdiag_c(B_c) (I ⊗ P_2)^{-1}`` with ``B_c = λ_{2c} K_1 + S_1`` (one Cholesky each),
    ``log|A| = Σ_c log|B_c| + p log|S_2|``, and the log-determinant's gradients
    ``∂/∂K_1 = Σ_c λ_{2c} B_c⁻¹``, ``∂/∂S_1 = Σ_c B_c⁻¹``, ``∂/∂K_2 = P_2 diag(tr(K_1 B_c⁻¹)) P_2ᵀ``,
    ``∂/∂S_2 = P_2 diag(tr(S_1 B_c⁻¹)) P_2ᵀ`` (the ``W`` sums of the eigen form, summed without ``K_1``'s eigenvalues).
    """

    @staticmethod
    def forward(ctx, K1, K2, S1, S2, Y, diag1, diag2, method):
        ctx.diag, ctx.method = (diag1, diag2), method
        if method == "eig":
            eig = KroneckerEig(KroneckerSum(K1, K2, S1, S2, diag1, diag2))
            P1, P2, W = eig.P1.unsqueeze(-3), eig.P2.unsqueeze(-3), eig.W.unsqueeze(-3)
            alpha = P1 @ (W * (P1.mT @ Y @ P2)) @ P2.mT  # Α_k with vec(Α_k) = A⁻¹ vec(Y_k)
            quad = (Y * alpha).sum((-3, -2, -1))
            ctx.save_for_backward(K1, K2, S1, S2, alpha, eig.P1, eig.P2, eig.W, eig.lam1, eig.lam2)
            return quad, eig.logdet
        with torch.no_grad():
            lam2, P2, ld2 = _factor_eig(K2.detach(), None if S2 is None else S2.detach(), diag2)
            S1d = _dense_noise(None if S1 is None else S1.detach(), diag1, K1)
            Z = Y @ P2.unsqueeze(-3)  # (*b, k, p, q): column c is solved with B_c
            grads = any(ctx.needs_input_grad[:4])
            need_S1 = ctx.needs_input_grad[2] and S1 is not None
            GK1 = GS1 = tK = tS = None
            cols, logdet, tKs, tSs = [], 0.0, [], []
            for c in range(K2.shape[-1]):
                lam = lam2[..., c, None, None]
                L = psd_safe_cholesky(lam * K1.detach() + S1d)  # B_c = λ_c K_1 + S_1
                logdet = logdet + 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
                cols.append(torch.cholesky_solve(Z[..., c].mT, L).mT)  # (*b, k, p)
                if grads:
                    Binv = torch.cholesky_inverse(L)
                    del L
                    tKs.append((K1.detach() * Binv).sum((-2, -1)))
                    tSs.append((S1d * Binv).sum((-2, -1)))
                    if need_S1:
                        GS1 = Binv.clone() if GS1 is None else GS1.add_(Binv)
                    GK1 = Binv.mul_(lam) if GK1 is None else GK1.add_(Binv.mul_(lam))  # in place: one n × n buffer
                    del Binv
            alpha = torch.stack(cols, -1) @ P2.mT.unsqueeze(-3)
            quad = (Y * alpha).sum((-3, -2, -1))
            logdet = logdet + K1.shape[-1] * ld2
            if grads:
                tK, tS = torch.stack(tKs, -1), torch.stack(tSs, -1)
        ctx.save_for_backward(K1, K2, S1, S2, alpha, P2, GK1, GS1, tK, tS)
        return quad, logdet

    @staticmethod
    def backward(ctx, g_quad, g_logdet):
        diag1, diag2 = ctx.diag
        if ctx.method == "eig":
            K1, K2, S1, S2, alpha, P1, P2, W, lam1, lam2 = ctx.saved_tensors
            # ∂log|A|/∂K_1 = P_1 diag(W λ_2) P_1ᵀ, ∂log|A|/∂S_1 = P_1 diag(W 1) P_1ᵀ (and symmetrically)
            ld_K1 = lambda: _congruence(P1, (W * lam2.unsqueeze(-2)).sum(-1))  # noqa: E731
            ld_K2 = lambda: _congruence(P2, (W * lam1.unsqueeze(-1)).sum(-2))  # noqa: E731
            ld_S1 = lambda: _congruence(P1, W.sum(-1))  # noqa: E731
            ld_S2 = lambda: _congruence(P2, W.sum(-2))  # noqa: E731
        else:
            K1, K2, S1, S2, alpha, P2, GK1, GS1, tK, tS = ctx.saved_tensors
            ld_K1, ld_S1 = (lambda: GK1), (lambda: GS1)
            ld_K2, ld_S2 = (lambda: _congruence(P2, tK)), (lambda: _congruence(P2, tS))
        gq = g_quad[..., None, None]
        gl = g_logdet[..., None, None]
        needs = ctx.needs_input_grad
        gK1 = gK2 = gS1 = gS2 = gY = None
        # ∂(rᵀA⁻¹r)/∂K_1 = −Σ_k Α_k K_2 Α_kᵀ, ∂(rᵀA⁻¹r)/∂S_1 = −Σ_k Α_k S_2 Α_kᵀ (and symmetrically)
        if needs[0]:
            gK1 = gl * ld_K1() - gq * _quad_term(alpha, K2, False, True)
        if needs[1]:
            gK2 = gl * ld_K2() - gq * _quad_term(alpha, K1, False, False)
        if needs[2] and S1 is not None:
            gS1 = gl * ld_S1() - gq * _quad_term(alpha, S2, diag2, True)
            gS1 = gS1.diagonal(dim1=-2, dim2=-1) if diag1 else gS1
        if needs[3] and S2 is not None:
            gS2 = gl * ld_S2() - gq * _quad_term(alpha, S1, diag1, False)
            gS2 = gS2.diagonal(dim1=-2, dim2=-1) if diag2 else gS2
        if needs[4]:
            gY = 2 * g_quad[..., None, None, None] * alpha
        return gK1, gK2, gS1, gS2, gY, None, None, None


def kronecker_inv_quad_logdet(
    parts: KroneckerSum, rhs: torch.Tensor | None, logdet: bool = True, method: str | None = None
):
    r"""``(Σ_k r_kᵀ A⁻¹ r_k, log|A|)`` for ``A = K_1 ⊗ K_2 + S_1 ⊗ S_2``, with the closed-form backward above.

    Args:
        parts: from :func:`kronecker_sum`.
        rhs: ``(*batch, pq, k)`` in the Kronecker product's (row-major) order, or None.
        logdet: whether to return the log-determinant.
        method: ``"eig"`` (both factors eigendecomposed), ``"chol"`` (the smaller factor eigendecomposed, one
            Cholesky of the larger per eigenvalue: faster for up to ``_MAX_TASKS_CHOLESKY`` tasks) or None (chosen
            by that size). Both are exact.

    Returns:
        ``(inv_quad (*batch), logdet (*batch) or None)``, differentiable with respect to every part and ``rhs``.
    """
    p, q = parts.sizes
    K1, K2 = parts.K1, parts.K2
    if rhs is None:
        rhs = torch.zeros(p * q, 1, dtype=K1.dtype, device=K1.device)
    if rhs.shape[-2] != p * q:
        raise ShapeError(f"kronecker_inv_quad_logdet: rhs has {rhs.shape[-2]} rows; expected {p} * {q} = {p * q}.")
    S = [(parts.S1, parts.diag1), (parts.S2, parts.diag2)]
    shapes = [K1.shape[:-2], K2.shape[:-2], rhs.shape[:-2]]
    shapes += [s.shape[: s.dim() - (1 if d else 2)] for s, d in S if s is not None]
    batch = broadcast_shapes(*shapes)

    def expand(x, trailing):
        return None if x is None else x.expand(*batch, *x.shape[x.dim() - trailing :])

    S1, S2 = (expand(s, 1 if d else 2) for s, d in S)
    k = rhs.shape[-1]
    Y = expand(rhs, 2).movedim(-1, -2).reshape(*batch, k, p, q)
    K1, K2 = expand(K1, 2), expand(K2, 2)
    if method is None:
        method = "chol" if min(p, q) <= _MAX_TASKS_CHOLESKY else "eig"
    if method == "chol" and p < q:  # the per-eigenvalue solves run over the smaller factor: exchange the roles
        K1, K2, S1, S2, Y = K2, K1, S2, S1, Y.mT
        quad, ld = _KroneckerInvQuadLogdet.apply(K1, K2, S1, S2, Y, parts.diag2, parts.diag1, method)
    else:
        quad, ld = _KroneckerInvQuadLogdet.apply(K1, K2, S1, S2, Y, parts.diag1, parts.diag2, method)
    return quad, (ld if logdet else None)
