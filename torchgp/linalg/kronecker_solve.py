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

from torchgp._shapes import any_nonzero, broadcast_shapes
from torchgp.errors import ShapeError
from torchgp.linalg._lapack import congruence, sym_eigh
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.linalg.kronecker_parts import KroneckerSum, is_kronecker_sum, kronecker_sum

# KroneckerSum, kronecker_sum and is_kronecker_sum live in torchgp.linalg.kronecker_parts (re-exported here)
__all__ = [
    "KroneckerSum",
    "kronecker_sum",
    "is_kronecker_sum",
    "kronecker_inv_quad_logdet",
    "kronecker_solve",
    "KroneckerEig",
]


def _factor_eig(K, S, diag: bool):
    """``(λ (*b, p), P (*b, p, p), log|S| (*b) or 0)`` with ``Pᵀ K P = diag λ`` and ``Pᵀ S P = I``."""
    if S is None:
        lam, Q = sym_eigh(K)
        return lam.clamp_min(0), Q, 0.0
    if diag:  # S = diag(s): P = S^{-1/2} Q, with Q the eigenvectors of S^{-1/2} K S^{-1/2}
        r = S.rsqrt()
        lam, Q = sym_eigh(K * r.unsqueeze(-1) * r.unsqueeze(-2))
        return lam.clamp_min(0), Q * r.unsqueeze(-1), S.log().sum(-1)
    L = psd_safe_cholesky(S)  # S = L Lᵀ: P = L⁻ᵀ Q, with Q the eigenvectors of L⁻¹ K L⁻ᵀ
    M = torch.linalg.solve_triangular(L, torch.linalg.solve_triangular(L, K, upper=False).mT, upper=False)
    lam, Q = sym_eigh((M + M.mT) / 2)
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

    def solve_matrices(self, Y: torch.Tensor) -> torch.Tensor:
        """:meth:`solve_matrix` for each of ``k`` matrices: ``Y (*b, k, p, q) → (*b, k, p, q)``."""
        P1, P2, W = self.P1.unsqueeze(-3), self.P2.unsqueeze(-3), self.W.unsqueeze(-3)
        return P1 @ (W * (P1.mT @ Y @ P2)) @ P2.mT

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``A⁻¹ rhs`` for ``rhs (*b, pq, k)`` → ``(*b, pq, k)``."""
        p, q = self.sizes
        X = self.solve_matrices(rhs.movedim(-1, -2).reshape(*rhs.shape[:-2], rhs.shape[-1], p, q))
        return X.reshape(*X.shape[:-2], p * q).movedim(-2, -1)


def _congruence(P, v):
    """``P diag(v) Pᵀ`` for ``P (*b, p, p)``, ``v (*b, p)`` (:func:`torchgp.linalg._lapack.congruence`)."""
    return congruence(P, v)


def _quad_term(A, M, diag: bool, left: bool):
    """``Σ_k Α_k M Α_kᵀ`` (``left``) or ``Σ_k Α_kᵀ M Α_k``, ``A (*b, k, p, q)``; ``M`` None = I, or diagonal."""
    X = A if left else A.mT
    if M is None:
        return (X @ X.mT).sum(-3)
    if diag:
        return ((X * M.unsqueeze(-2).unsqueeze(-3)) @ X.mT).sum(-3)
    return (X @ M.unsqueeze(-3) @ X.mT).sum(-3)


def _frobenius(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``Σ_ij A_ij B_ij`` ``(*b)`` for ``A, B (*b, p, p)`` as one dot product per batch member (no ``p × p`` temporary)."""
    batch = broadcast_shapes(A.shape[:-2], B.shape[:-2])
    a = A.expand(*batch, *A.shape[-2:]).reshape(*batch, 1, -1)
    b = B.expand(*batch, *B.shape[-2:]).reshape(*batch, -1, 1)
    return (a @ b).reshape(batch)


def _minus_quad_term(out: torch.Tensor, A: torch.Tensor, M, diag: bool, scale: torch.Tensor) -> torch.Tensor:
    """``out − scale · Σ_k Α_k M Α_kᵀ`` (:func:`_quad_term` with ``left``), in place in ``out (*b, p, p)``."""
    X = A if M is None else (A * M.unsqueeze(-2).unsqueeze(-3) if diag else A @ M.unsqueeze(-3))
    X = X * scale[..., None, None, None]
    batch = out.shape[:-2]
    if X.shape[:-3] != batch or not out.is_contiguous():
        return out - (X @ A.mT).sum(-3)
    p, kq = out.shape[-1], A.shape[-3] * A.shape[-1]
    left = X.movedim(-3, -2).reshape(-1, p, kq)  # [X_1 … X_k] side by side: Σ_k X_k Α_kᵀ is one product
    right = A.expand_as(X).movedim(-3, -2).reshape(-1, p, kq).mT
    out.view(-1, p, p).baddbmm_(left, right, alpha=-1)
    return out


# The small factor (size q) at most this large: solve per eigenvalue of it, with q Choleskys of the large factor,
# instead of one eigendecomposition of the large factor. Measured single-threaded in float64: eigh + one GEMM of an
# n × n matrix cost 8.3× (n = 2000) and 6.3× (n = 1000) a Cholesky plus a cholesky_inverse of it.
_MAX_TASKS_CHOLESKY = 6


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
            K1d, S1d = K1.detach(), (None if S1 is None else S1.detach())
            lam2, P2, ld2 = _factor_eig(K2.detach(), None if S2 is None else S2.detach(), diag2)
            Z = Y @ P2.unsqueeze(-3)  # (*b, k, p, q): column c is solved with B_c
            grads = any(ctx.needs_input_grad[:4])
            need_S1 = ctx.needs_input_grad[2] and S1 is not None
            # three n × n buffers reused for every c (fresh large allocations cost page faults on CPU)
            B, L, info = torch.empty_like(K1d), torch.empty_like(K1d), K1d.new_empty(K1d.shape[:-2], dtype=torch.int32)
            Binv = torch.empty_like(K1d) if grads else None
            GK1 = torch.zeros_like(K1d) if grads else None
            GS1 = torch.zeros_like(K1d) if need_S1 else None
            tK = tS = None
            cols, logdet, tKs, tSs = [], 0.0, [], []
            for c in range(K2.shape[-1]):
                lam = lam2[..., c, None, None]
                torch.mul(K1d, lam, out=B)  # B_c = λ_c K_1 + S_1
                if S1d is None:
                    B.diagonal(dim1=-2, dim2=-1).add_(1)
                elif diag1:
                    B.diagonal(dim1=-2, dim2=-1).add_(S1d)
                else:
                    B.add_(S1d)
                Lc, info = torch.linalg.cholesky_ex(B, out=(L, info))
                if any_nonzero(info):
                    Lc = psd_safe_cholesky(B)  # jitter escalation, with its warning
                logdet = logdet + 2 * Lc.diagonal(dim1=-2, dim2=-1).log().sum(-1)
                cols.append(torch.cholesky_solve(Z[..., c].mT, Lc).mT)  # (*b, k, p)
                if grads:
                    torch.cholesky_inverse(Lc, out=Binv)
                    tKs.append(_frobenius(K1d, Binv))  # tr(K_1 B_c⁻¹)
                    if S1d is None:
                        tSs.append(Binv.diagonal(dim1=-2, dim2=-1).sum(-1))
                    elif diag1:
                        tSs.append((Binv.diagonal(dim1=-2, dim2=-1) * S1d).sum(-1))
                    else:
                        tSs.append(_frobenius(S1d, Binv))
                    if need_S1:
                        GS1.add_(Binv)
                    GK1.addcmul_(Binv, lam)  # Σ_c λ_c B_c⁻¹, in place
            del B, L, Binv
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
            if ctx.method == "eig":  # g_l folded into the congruence's diagonal: one p × p product, no rescaling
                scaled = _congruence(P1, (W * lam2.unsqueeze(-2)).sum(-1) * g_logdet[..., None])
            else:
                scaled = gl * ld_K1()
            gK1 = _minus_quad_term(scaled, alpha, K2, False, g_quad)
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


def _expanded(parts: KroneckerSum, rhs: torch.Tensor | None):
    """The parts and ``rhs (*batch, pq, k)`` broadcast to one batch; ``rhs`` as matrices ``Y (*batch, k, p, q)``."""
    p, q = parts.sizes
    K1, K2 = parts.K1, parts.K2
    if rhs is None:
        rhs = torch.zeros(p * q, 1, dtype=K1.dtype, device=K1.device)
    if rhs.shape[-2] != p * q:
        raise ShapeError(f"Kronecker solve: rhs has {rhs.shape[-2]} rows; expected {p} * {q} = {p * q}.")
    S = [(parts.S1, parts.diag1), (parts.S2, parts.diag2)]
    shapes = [K1.shape[:-2], K2.shape[:-2], rhs.shape[:-2]]
    shapes += [s.shape[: s.dim() - (1 if d else 2)] for s, d in S if s is not None]
    batch = broadcast_shapes(*shapes)

    def expand(x, trailing):
        return None if x is None else x.expand(*batch, *x.shape[x.dim() - trailing :])

    S1, S2 = (expand(s, 1 if d else 2) for s, d in S)
    Y = expand(rhs, 2).movedim(-1, -2).reshape(*batch, rhs.shape[-1], p, q)
    return expand(K1, 2), expand(K2, 2), S1, S2, Y


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
    K1, K2, S1, S2, Y = _expanded(parts, rhs)
    if method is None:
        method = "chol" if min(p, q) <= _MAX_TASKS_CHOLESKY else "eig"
    if method == "chol" and p < q:  # the per-eigenvalue solves run over the smaller factor: exchange the roles
        K1, K2, S1, S2, Y = K2, K1, S2, S1, Y.mT
        quad, ld = _KroneckerInvQuadLogdet.apply(K1, K2, S1, S2, Y, parts.diag2, parts.diag1, method)
    else:
        quad, ld = _KroneckerInvQuadLogdet.apply(K1, K2, S1, S2, Y, parts.diag1, parts.diag2, method)
    return quad, (ld if logdet else None)


def _cross_term(G, M, X, diag: bool, left: bool):
    """``Σ_k G_k M X_kᵀ`` (``left``) or ``Σ_k G_kᵀ M X_k`` for ``G, X (*b, k, p, q)``; ``M`` None = I, or diagonal."""
    if not left:
        G, X = G.mT, X.mT
    if M is not None:
        G = G * M.unsqueeze(-2).unsqueeze(-3) if diag else G @ M.unsqueeze(-3)
    return (G @ X.mT).sum(-3)


class _KroneckerSolve(torch.autograd.Function):
    r"""``(K1, K2, S1, S2, B (*b, k, p, q)) → X``, ``vec(X_k) = A⁻¹ vec(B_k)``, from a precomputed :class:`KroneckerEig`.

    Backward (``G`` the incoming gradient, ``Γ_k`` with ``vec(Γ_k) = A⁻¹ vec(G_k)``; ``∂/∂A = −Σ_k vec(Γ_k) vec(X_k)ᵀ``
    contracted through the Kronecker structure): ``∂/∂B = Γ``, ``∂/∂K_1 = −Σ_k Γ_k K_2 X_kᵀ``,
    ``∂/∂K_2 = −Σ_k Γ_kᵀ K_1 X_k``, ``∂/∂S_1 = −Σ_k Γ_k S_2 X_kᵀ``, ``∂/∂S_2 = −Σ_k Γ_kᵀ S_1 X_k`` (diagonals of
    the last two for diagonal noise factors). No gradient passes through the eigendecompositions.
    """

    @staticmethod
    def forward(ctx, K1, K2, S1, S2, B, eig, diag1, diag2):
        X = eig.solve_matrices(B)
        ctx.eig, ctx.diag = eig, (diag1, diag2)
        ctx.save_for_backward(K1, K2, S1, S2, X)
        return X

    @staticmethod
    def backward(ctx, G):
        K1, K2, S1, S2, X = ctx.saved_tensors
        diag1, diag2 = ctx.diag
        needs = ctx.needs_input_grad
        Gam = ctx.eig.solve_matrices(G)
        gK1 = -_cross_term(Gam, K2, X, False, True) if needs[0] else None
        gK2 = -_cross_term(Gam, K1, X, False, False) if needs[1] else None
        gS1 = gS2 = None
        if needs[2] and S1 is not None:
            gS1 = -_cross_term(Gam, S2, X, diag2, True)
            gS1 = gS1.diagonal(dim1=-2, dim2=-1) if diag1 else gS1
        if needs[3] and S2 is not None:
            gS2 = -_cross_term(Gam, S1, X, diag1, False)
            gS2 = gS2.diagonal(dim1=-2, dim2=-1) if diag2 else gS2
        return gK1, gK2, gS1, gS2, (Gam if needs[4] else None), None, None, None


def kronecker_solve(parts: KroneckerSum, rhs: torch.Tensor, eig: KroneckerEig | None = None) -> torch.Tensor:
    """``A⁻¹ rhs`` for ``A = K_1 ⊗ K_2 + S_1 ⊗ S_2``: ``rhs (*batch, pq, k) → (*batch, pq, k)``.

    Differentiable with respect to every part and ``rhs`` by the closed form of :class:`_KroneckerSolve`; ``eig``
    (the parts' :class:`KroneckerEig`) is computed here if not given.
    """
    eig = KroneckerEig(parts) if eig is None else eig
    K1, K2, S1, S2, Y = _expanded(parts, rhs)
    X = _KroneckerSolve.apply(K1, K2, S1, S2, Y, eig, parts.diag1, parts.diag2)
    return X.reshape(*X.shape[:-2], -1).movedim(-2, -1)
