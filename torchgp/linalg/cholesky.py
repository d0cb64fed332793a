"""Cholesky factorisation with jitter escalation and a diagnosis when it fails; the inverse from the factor."""

from __future__ import annotations

import torch

from torchgp import _record, settings
from torchgp._shapes import any_nonzero, broadcast_shapes
from torchgp.errors import NotPSDError, NumericalWarning
from torchgp.linalg import _log
from torchgp.linalg._lapack import openblas_threads, scipy_routine


def diagnose_not_psd(A: torch.Tensor) -> str:
    """A sentence on why ``A`` (``(*batch, n, n)``) cannot be factorised, with the fix."""
    if not torch.all(torch.isfinite(A)):
        return (
            "the matrix contains NaN or inf: a hyperparameter or an input is non-finite "
            "(check the training data and model.non_finite_parameters())."
        )
    eig = torch.linalg.eigvalsh(A.detach().to(torch.float64))
    lo, hi = eig[..., 0].min().item(), eig[..., -1].max().item()
    if lo < -1e-6 * max(abs(hi), 1e-300):
        return (
            f"the matrix is indefinite (smallest eigenvalue {lo:.3g}, largest {hi:.3g}): the kernel is not "
            "a valid covariance function. For a custom kernel, check its forward with "
            "torchgp.check.check_kernel(kernel)."
        )
    cond = hi / max(lo, 1e-300)
    return (
        f"the matrix is numerically singular (eigenvalues from {lo:.3g} to {hi:.3g}, condition number "
        f"{cond:.2g}). Likely causes: duplicate or near-duplicate inputs with a tiny noise, a lengthscale "
        "that grew far beyond the data's range, or float32 precision. Fixes: use float64, put a floor "
        "on the noise (likelihood.noise_covar.register_constraint('raw_noise', GreaterThan(1e-4))), "
        "or remove duplicate inputs."
    )


def psd_safe_cholesky(A: torch.Tensor, jitter: float | None = None, max_tries: int | None = None) -> torch.Tensor:
    """Lower Cholesky factor of ``A``, adding diagonal jitter if the plain factorisation fails.

    The k-th retry adds ``jitter · 10^k · mean(diag A)`` to the diagonal and warns with
    :class:`~torchgp.errors.NumericalWarning` saying how much was added. On CPU, for float32/float64,
    ``n ≥ POTRF_MIN_N[dtype]`` (in :mod:`torchgp.linalg.cholesky`) and no autograd through ``A``, the factorisation
    is LAPACK's ``potrf`` through scipy on a row-major copy of ``A``; otherwise :func:`torch.linalg.cholesky_ex`.
    Both read ``A``'s lower triangle and agree to rounding.

    Args:
        A: symmetric positive (semi-)definite matrices, ``(*batch, n, n)``.
        jitter: first relative jitter (default ``settings.cholesky_jitter.value(A.dtype)``).
        max_tries: retries before giving up (default ``settings.cholesky_max_tries``).

    Returns:
        ``L`` with ``L Lᵀ = A (+ jitter I)``, ``(*batch, n, n)``.

    Raises:
        NotPSDError: still not factorisable; the message says why and how to fix it.
    """
    _log.debug("Cholesky of %s %s", _log.shape(A), A.dtype)
    L = _first_try(A, overwrite=False)
    if L is not None:
        return L
    base = settings.cholesky_jitter.value(A.dtype) if jitter is None else jitter
    tries = settings.cholesky_max_tries.value() if max_tries is None else max_tries
    scale = A.diagonal(dim1=-2, dim2=-1).abs().mean(-1, keepdim=True).clamp_min(torch.finfo(A.dtype).tiny)
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    if torch.all(torch.isfinite(A)):
        for k in range(tries):
            added = base * 10**k * scale  # (*batch, 1)
            L = _first_try(A + added.unsqueeze(-1) * eye, overwrite=True)
            if L is not None:
                _record.warn(
                    f"The {A.shape[-1]}x{A.shape[-1]} matrix was not positive definite in {A.dtype}; added "
                    f"jitter {added.max().item():.2e} ({base * 10**k:.0e} of its mean diagonal) to the "
                    "diagonal. "
                    + (
                        "If this repeats, use float64 or a larger noise floor."
                        if A.dtype != torch.float64
                        else "Common for posterior covariances on dense grids; during training, consider a "
                        "larger noise floor or removing near-duplicate inputs."
                    ),
                    NumericalWarning,
                    stacklevel=3,
                )
                return L
    raise NotPSDError(
        f"Cholesky factorisation of a {tuple(A.shape)} matrix failed"
        + (
            f" even with jitter up to {base * 10 ** (tries - 1):.0e} of its mean diagonal"
            if torch.all(torch.isfinite(A))
            else ""
        )
        + f": {diagnose_not_psd(A)}"
    )


# Smallest n, per dtype, at which LAPACK's ``potrf`` / ``potri`` through scipy (its bundled OpenBLAS, held to torch's
# thread count) beat torch's ``linalg.cholesky_ex`` / ``cholesky_inverse`` (MKL) on CPU, measured as the marginal
# likelihood uses them. 2-core AMD EPYC VM (Zen 4), one thread, torch 2.13, scipy 1.17, interleaved medians on a loaded
# machine (LAPACK ÷ torch). potrf in place on ``K + diag σ²`` against the sum's copy and ``cholesky_ex``: float64
# n = 50 / 64 / 80 / 100 / 128 / 200 / 256: 1.31 / 1.13 / 0.93 / 0.80 / 0.40 / 0.82 / 0.42, float32 n = 50 / 64 / 80 /
# 100 / 128 / 200: 1.23 / 0.92 / 0.72 / 0.54 / 0.35 / 0.75; batches of 32 float64 matrices n = 50 / 100: 0.97 / 0.69
# (one potrf per member against the batched ``cholesky_ex``, whose ``tril`` of the column-major result costs as much as
# the factorisation). The row-major factor also takes the faster ``cholesky_inverse(Lᵀ, upper=True)`` below: a batch
# of 32 float64 fits of n = 100 (``benchmarks/small_n_fit.py``) took 0.68 s with these thresholds against 0.87 s with
# 128 for both dtypes. potri on the row-major factor with the backward's scaling and rank-one
# update folded into the symmetrisation, against ``cholesky_inverse`` then ``mul_`` and ``baddbmm_``: float64
# n = 320 / 384 / 448 / 512 / 768 / 1000: 1.08 / 0.93 / 0.91 / 0.82 / 0.82 / 0.79, float32 n = 384 / 512 / 640 / 768
# / 1000: 1.16 / 1.07 / 1.00 / 0.85 / 0.82. Below these, torch's routines are as fast (potri's own speed-up is small
# there and the per-call work of the route is not), and batches of small matrices keep torch's batched kernels.
POTRF_MIN_N = {torch.float64: 80, torch.float32: 64}
POTRI_MIN_N = {torch.float64: 384, torch.float32: 640}
# Block rows of the in-place symmetrisation after potri (128 measured best of 64 / 128 / 256 at n = 256–1780).
_BLOCK = 128
_LOWER_MASKS: dict = {}  # (n, device) → boolean lower-triangle mask, the last few sizes only


def _lower_mask(n: int, device) -> torch.Tensor:
    key = (n, str(device))
    mask = _LOWER_MASKS.get(key)
    if mask is None:
        if len(_LOWER_MASKS) >= 4:
            _LOWER_MASKS.clear()
        mask = _LOWER_MASKS[key] = torch.ones(n, n, dtype=torch.bool, device=device).tril_()
    return mask


def _lapack(name: str, A: torch.Tensor, min_n: dict, *others):
    """scipy's LAPACK routine ``name`` for ``A (*batch, n, n)`` where it is the faster exact route, else None.

    None on CUDA, below ``min_n[A.dtype]``, when scipy lacks it, and when autograd must differentiate through ``A``
    or any of ``others``.
    """
    n = A.shape[-1]
    if A.device.type != "cpu" or n < min_n.get(A.dtype, n + 1):
        return None
    if torch.is_grad_enabled() and any(torch.is_tensor(t) and t.requires_grad for t in (A, *others)):
        return None
    return scipy_routine(name, A.dtype)


def takes_potri(L: torch.Tensor) -> bool:
    """Whether :func:`cholesky_inverse_plus_outer` inverts ``L (*batch, n, n)`` through LAPACK's ``potri``."""
    return _lapack("potri", L, POTRI_MIN_N) is not None


def _first_try(A: torch.Tensor, overwrite: bool) -> torch.Tensor | None:
    """Lower Cholesky factor of ``A (*batch, n, n)`` without jitter, or None if some batch member is not PD.

    On the LAPACK route the factor is computed in a row-major buffer: ``A`` itself when ``overwrite`` and ``A`` is
    contiguous (its contents are then lost, whether or not the factorisation succeeds), else a copy.
    """
    potrf = _lapack("potrf", A, POTRF_MIN_N)
    if potrf is None:
        L, info = torch.linalg.cholesky_ex(A)
        return None if any_nonzero(info) else L
    buf = A if overwrite and A.is_contiguous() else A.clone(memory_format=torch.contiguous_format)
    n = A.shape[-1]
    flat = buf.view(-1, n, n)
    with openblas_threads(torch.get_num_threads()):
        for b in range(flat.shape[0]):
            # The row-major lower triangle read as a column-major array is the upper factor's: potrf(uplo = U) on
            # it leaves L in the row-major lower triangle, and clean = 1 zeroes the rest.
            rows = flat[b].numpy().T
            out, info = potrf(rows, lower=0, overwrite_a=1, clean=1)
            if info != 0:
                return None
            if out.ctypes.data != rows.ctypes.data:  # scipy copied after all (never for an F-ordered array)
                rows[...] = out
    return buf


def psd_safe_cholesky_plus_diag(K: torch.Tensor, diag: torch.Tensor | None = None) -> torch.Tensor:
    """Lower Cholesky factor of ``K + diag(d)``, formed in the one buffer the factorisation then overwrites.

    As ``psd_safe_cholesky(K + torch.diag_embed(d))`` (same routes, same jitter escalation and errors), with one
    n × n copy of ``K`` where that sum and a factorisation would take two.

    Args:
        K: symmetric matrices, ``(*batch, n, n)`` (not modified).
        diag: the diagonal to add, ``(*batch, n)`` (broadcast), or None.

    Returns:
        ``L`` with ``L Lᵀ = K + diag(d) (+ jitter I)``, ``(*batch, n, n)``.
    """
    A = K.clone(memory_format=torch.contiguous_format)
    if diag is not None:
        A.diagonal(dim1=-2, dim2=-1).add_(diag)
    L = _first_try(A, overwrite=True)
    if L is not None:
        return L
    return psd_safe_cholesky(K if diag is None else K + torch.diag_embed(diag))  # the buffer is spent: rebuild


def cholesky_solve(rhs: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """``A⁻¹ rhs = L⁻ᵀ(L⁻¹ rhs)`` from the lower factor ``L`` of ``A`` (R&W 2006, Alg. 2.1 line 3).

    Two triangular solves, which read ``L`` in either memory order; :func:`torch.cholesky_solve` first copies ``L``
    (at n = 1780 in float64 that copy made it 7 ms against 1 ms). Differentiable in both arguments.

    Args:
        rhs: ``(*batch, n, k)``.
        L: lower-triangular factors, ``(*batch, n, n)``.

    Returns:
        ``(*batch, n, k)`` (batch dimensions broadcast).
    """
    z = torch.linalg.solve_triangular(L, rhs, upper=False)
    return torch.linalg.solve_triangular(L.mT, z, upper=True)


def cholesky_inverse(L: torch.Tensor) -> torch.Tensor:
    """``A⁻¹ = L⁻ᵀ L⁻¹`` from the lower Cholesky factor ``L`` of ``A``, by the fastest exact route.

    On CPU, for float32/float64 and ``n ≥ POTRI_MIN_N[dtype]``, LAPACK's ``potri`` (scipy) inverts a copy of each
    batch member's factor in place, with scipy's OpenBLAS held to torch's thread count, and the triangle it fills is
    mirrored by blocks; otherwise, on CUDA, and whenever autograd must differentiate through it (grad mode on and
    ``L`` requiring a gradient), it is :func:`torch.cholesky_inverse`. Both give ``A⁻¹`` to rounding.

    Args:
        L: lower-triangular factors, ``(*batch, n, n)``.

    Returns:
        The symmetric inverses, ``(*batch, n, n)`` (exactly symmetric on the LAPACK route).
    """
    return cholesky_inverse_plus_outer(L)


def cholesky_inverse_plus_outer(
    L: torch.Tensor,
    scale: torch.Tensor | None = None,
    V: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""``s A⁻¹ + w V Vᵀ`` from the lower Cholesky factor ``L`` of ``A``, in the inverse's own buffer.

    The marginal likelihood's gradient with respect to its covariance, :math:`g_l A^{-1} - g_q \alpha\alpha^\top`
    (R&W 2006, eq. 5.9), is this with ``s = g_l``, ``V = α``, ``w = −g_q``. On the LAPACK route of
    :func:`cholesky_inverse` the scaling and the update are applied block row by block row while each block is in
    cache, in the same pass that mirrors potri's triangle, so the result is exactly symmetric; otherwise they
    follow :func:`torch.cholesky_inverse` (differentiably when grad mode is on).

    Args:
        L: lower-triangular factors, ``(*batch, n, n)``.
        scale: ``s``, ``(*batch)`` (broadcast), or None for 1.
        V: ``(*batch, n, k)``, or None for no update.
        weight: ``w``, ``(*batch)`` (broadcast), a Python float, or None for 1; only with ``V``.

    Returns:
        ``(*batch, n, n)``.
    """
    potri = _lapack("potri", L, POTRI_MIN_N, scale, V, weight)
    out = None if potri is None else _potri_route(potri, L, scale, V, weight)
    if out is not None:
        return out
    n, batch = L.shape[-1], L.shape[:-2]
    if L.stride(-1) == 1 and L.stride(-2) == n and n > 1:  # row-major: Lᵀ is a column-major upper factor, uncopied
        out = torch.cholesky_inverse(L.mT, upper=True)
    else:
        out = torch.cholesky_inverse(L)
    # in place where autograd records nothing and no broadcast widens the result; a 0-dim scale or weight (one
    # matrix, or one value for the batch) multiplies as it is, without reshaping
    in_place = not torch.is_grad_enabled()
    if scale is not None:
        s = scale if scale.dim() == 0 else scale[..., None, None]
        out = out.mul_(s) if in_place and (scale.dim() == 0 or scale.shape == batch) else out * s
    if V is not None:
        a = weight if isinstance(weight, float) else 1.0  # a Python float weight is the GEMM's own α
        if weight is None or isinstance(weight, float):
            Vw = V
        else:
            Vw = V * (weight if weight.dim() == 0 else weight[..., None, None])
        if in_place and out.shape[:-2] == batch and Vw.shape[:-2] == batch and V.shape[:-2] == batch:
            if L.dim() == 2:
                out.addmm_(Vw, V.mT, alpha=a)
            elif L.dim() == 3:
                out.baddbmm_(Vw, V.mT, alpha=a)
            else:
                k = V.shape[-1]
                out.view(-1, n, n).baddbmm_(Vw.reshape(-1, n, k), V.mT.reshape(-1, k, n), alpha=a)
        else:
            out = out + (Vw @ V.mT if a == 1.0 else (Vw @ V.mT) * a)
    return out


def _potri_route(potri, L, scale, V, weight) -> torch.Tensor | None:
    """:func:`cholesky_inverse_plus_outer` by LAPACK's ``potri``, one batch member at a time; None if it fails."""
    n = L.shape[-1]
    batch = L.shape[:-2] if V is None else broadcast_shapes(L.shape[:-2], V.shape[:-2])
    flat = L.detach().expand(*batch, n, n).reshape(-1, n, n)
    m = flat.shape[0]
    scales = None if scale is None else scale.detach().expand(batch).reshape(m).tolist()  # floats: GEMM's β
    if V is not None:
        V = V.detach().expand(*batch, *V.shape[-2:]).reshape(m, n, -1)
        if weight is None or isinstance(weight, float):
            Vw = V if weight is None else V * weight
        else:
            Vw = V * weight.detach().expand(batch).reshape(m, 1, 1)
    store = torch.empty((m, n, n), dtype=L.dtype)
    col_major = flat.stride(-2) == 1 and flat.stride(-1) == n
    work = store.mT if col_major else store  # the factor's own memory order: its copy is a plain memcpy
    with openblas_threads(torch.get_num_threads()):
        for b in range(m):
            w = work[b]
            w.copy_(flat[b])
            # potri fills the lower triangle of A⁻¹ (column-major) or, given the row-major factor read as the
            # column-major upper factor, the upper one: in both, the lower triangle of ``w`` read as a tensor.
            arr = w.numpy() if col_major else w.numpy().T
            out, info = potri(arr, lower=1 if col_major else 0, overwrite_c=1)
            if info != 0:
                return None
            if out.ctypes.data != arr.ctypes.data:  # scipy copied after all (never for an F-ordered array)
                arr[...] = out
            _finish_lower(w, None if scales is None else scales[b], None if V is None else (V[b], Vw[b]))
    return store.reshape(*batch, n, n)


def _finish_lower(M: torch.Tensor, s: float | None, update) -> None:
    """``M ← s·M + Vw Vᵀ``, in place, from the lower triangle of ``M (n, n)``, mirrored so that ``M = Mᵀ`` exactly.

    Block row by block row: the row panel up to the diagonal is scaled and updated (one GEMM, ``C ← β C + A B``
    with ``β = s``) and the part of it left of the diagonal block copied, transposed, above the diagonal; then the
    diagonal blocks, viewed as one batch, are mirrored within themselves. Whatever ``M`` held above its diagonal is
    never read into the result.
    """
    n = M.shape[-1]
    for i in range(0, n, _BLOCK):
        e = min(i + _BLOCK, n)
        panel = M[i:e, :e]
        if update is not None:
            V, Vw = update
            panel.addmm_(Vw[i:e], V[:e].mT, beta=1.0 if s is None else s)
        elif s is not None:
            panel.mul_(s)
        if i:
            M[:i, i:e].copy_(M[i:e, :i].mT)
    full = n // _BLOCK
    sr, sc = M.stride()
    if full:
        blocks = M.as_strided((full, _BLOCK, _BLOCK), (_BLOCK * (sr + sc), sr, sc))
        blocks.copy_(torch.where(_lower_mask(_BLOCK, M.device), blocks, blocks.mT))
    if n > full * _BLOCK:
        D = M[full * _BLOCK :, full * _BLOCK :]
        D.copy_(torch.where(_lower_mask(D.shape[-1], M.device), D, D.mT))
