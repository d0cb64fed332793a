"""Dense symmetric LAPACK/BLAS routines through scipy where they measure faster than torch's on CPU.

torch 2.13's CPU build calls MKL; scipy bundles OpenBLAS. On the machines measured (2-core AMD EPYC VMs) OpenBLAS's
divide-and-conquer eigensolver and its rank-k update are faster than the MKL routines torch reaches, so the
Kronecker solver (:mod:`torchgp.linalg.kronecker_solve`) takes them there. Each function falls back to torch's
routine on CUDA, for small sizes, when scipy is missing, and whenever autograd must differentiate through it; both
routes are exact to rounding. scipy's OpenBLAS is held to torch's thread count.
"""

from __future__ import annotations

import contextlib
import sys

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes

__all__ = ["sym_eigh", "congruence", "openblas_threads", "scipy_routine", "EIGH_SCIPY_MIN_N"]

_OPENBLAS = []  # [the OpenBLAS libraries' threadpoolctl controllers], found once scipy.linalg is loaded


class _ThreadLimit:
    """Set each OpenBLAS library to ``threads`` threads on entry where it differs, and restore it on exit.

    threadpoolctl's own ``limit`` context costs about 55 µs an entry and exit (it re-inspects every library);
    reading and setting the count directly costs about 1 µs per library, which matters in every Cholesky backward.
    """

    __slots__ = ("libs", "threads", "saved")

    def __init__(self, libs, threads: int):
        self.libs, self.threads, self.saved = libs, threads, []

    def __enter__(self):
        for lib in self.libs:
            now = lib.get_num_threads()
            if now is not None and now != self.threads:
                lib.set_num_threads(self.threads)
                self.saved.append((lib, now))
        return self

    def __exit__(self, *exc):
        while self.saved:
            lib, now = self.saved.pop()
            lib.set_num_threads(now)
        return False


def openblas_threads(threads: int):
    """A context in which scipy's and numpy's bundled OpenBLAS use ``threads`` threads (torch's BLAS is untouched).

    Used with torch's own thread count around the LAPACK routes here and in :mod:`torchgp.linalg.cholesky`, and
    with one thread around scipy's L-BFGS-B (:mod:`torchgp.optim`). A no-op when threadpoolctl is missing or cannot
    inspect the process.
    """
    if not _OPENBLAS:
        libs = _find_openblas()
        if libs or "scipy.linalg" in sys.modules:  # before scipy.linalg's import its OpenBLAS is not loaded yet
            _OPENBLAS.append(libs)
    else:
        libs = _OPENBLAS[0]
    return _ThreadLimit(libs, threads) if libs else contextlib.nullcontext()


def _find_openblas() -> list:
    """The OpenBLAS libraries loaded in the process (empty when threadpoolctl is missing or finds none)."""
    try:
        from threadpoolctl import ThreadpoolController

        return list(ThreadpoolController().select(prefix=["libscipy_openblas", "libopenblas"]).lib_controllers)
    except Exception:  # threadpoolctl missing or unable to inspect the process: OpenBLAS keeps its threads
        return []


_ROUTINES: dict = {}  # (name, dtype) → scipy's routine, or None when scipy or the routine is unavailable
_PREFIX = {torch.float64: "d", torch.float32: "s"}


def scipy_routine(name: str, dtype: torch.dtype):
    """scipy's routine ``name`` for ``dtype``, or ``None`` where there is none (looked up once per pair).

    ``name`` is a LAPACK or BLAS routine without its precision letter (``"potri"``, ``"syrk"``: ``dpotri`` for
    float64, ``spotri`` for float32, found in :mod:`scipy.linalg.lapack` or :mod:`scipy.linalg.blas`), or
    ``"eigh"`` for :func:`scipy.linalg.eigh` (float32 and float64 alike). ``None`` for other dtypes, or when
    scipy is missing or broken: the caller then takes torch's routine.
    """
    key = (name, dtype)
    if key not in _ROUTINES:
        _ROUTINES[key] = _find_routine(name, dtype)
    return _ROUTINES[key]


def _find_routine(name: str, dtype: torch.dtype):
    prefix = _PREFIX.get(dtype)
    if prefix is None:
        return None
    try:
        from scipy import linalg
        from scipy.linalg import blas, lapack

        if name == "eigh":
            return linalg.eigh
        return getattr(lapack, prefix + name, None) or getattr(blas, prefix + name, None)
    except Exception:  # scipy missing or broken: torch's routine serves
        return None


# Smallest size at which LAPACK's divide-and-conquer ``syevd`` through scipy (its bundled OpenBLAS) beats
# ``torch.linalg.eigh`` on CPU. Measured on a 2-core AMD EPYC VM, one thread, torch 2.13 (MKL), interleaved medians
# of 5, float64 (scipy ÷ torch): n = 600 / 1500: 0.83 / 0.73; n = 4000: 14.3 s against 16.6 s.
EIGH_SCIPY_MIN_N = 256


def sym_eigh(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(λ (*b, p), Q (*b, p, p))`` with ``M = Q diag(λ) Qᵀ`` for symmetric ``M (*b, p, p)``, by the fastest route.

    On CPU, for float32/float64, ``p ≥ EIGH_SCIPY_MIN_N`` and no autograd through ``M``, LAPACK's ``syevd`` through
    scipy (its OpenBLAS held to torch's thread count), one batch member at a time; otherwise
    :func:`torch.linalg.eigh`. Both are the same LAPACK algorithm and agree to rounding. As in GPyTorch, a matrix
    narrower than ``settings._linalg_dtype_symeig`` (default float64; ``settings.linalg_dtypes``) is decomposed
    in that dtype and the results returned in ``M``'s.
    """
    wide = settings._linalg_dtype_symeig.value()
    if M.dtype.is_floating_point and wide.is_floating_point and torch.finfo(wide).bits > torch.finfo(M.dtype).bits:
        lam, Q = sym_eigh(M.to(wide))
        return lam.to(M.dtype), Q.to(M.dtype)
    p = M.shape[-1]
    eigh = scipy_routine("eigh", M.dtype) if M.device.type == "cpu" else None
    if eigh is None or p < EIGH_SCIPY_MIN_N or (torch.is_grad_enabled() and M.requires_grad):
        return torch.linalg.eigh(M)
    flat = M.detach().reshape(-1, p, p)
    lam = torch.empty(flat.shape[:-1], dtype=M.dtype)
    Q = torch.empty(flat.shape, dtype=M.dtype)
    with openblas_threads(torch.get_num_threads()):
        for b in range(flat.shape[0]):
            w, V = eigh(flat[b].numpy(), driver="evd", check_finite=False)
            lam[b], Q[b] = torch.from_numpy(w), torch.from_numpy(V)
    return lam.reshape(M.shape[:-1]), Q.reshape(M.shape)


def congruence(P: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``P diag(v) Pᵀ`` for ``P (*b, p, p)``, ``v (*b, p)``.

    When ``v`` has one sign (the log-determinant terms: ``v = ±W λ``, ``W > 0``) and ``p ≥ EIGH_SCIPY_MIN_N`` on
    CPU, it is ``±B Bᵀ`` with ``B = P diag(|v|)^{1/2}``, by BLAS ``syrk`` (one triangle: half a general product's
    flops) and mirrored; otherwise one general product.
    """
    p = P.shape[-1]
    syrk = scipy_routine("syrk", P.dtype) if P.device.type == "cpu" and p >= EIGH_SCIPY_MIN_N else None
    if syrk is None or (torch.is_grad_enabled() and (P.requires_grad or v.requires_grad)):
        return (P * v.unsqueeze(-2)) @ P.mT
    sign = 1.0 if bool((v >= 0).all()) else -1.0 if bool((v <= 0).all()) else 0.0
    if sign == 0.0:
        return (P * v.unsqueeze(-2)) @ P.mT
    B = (P * v.abs().sqrt().unsqueeze(-2)).reshape(-1, p, p)
    out = torch.empty_like(B)
    with openblas_threads(torch.get_num_threads()):
        for b in range(B.shape[0]):
            # B[b] row-major is Bᵀ column-major: syrk(trans=1) on it gives (Bᵀ)ᵀ Bᵀ = B Bᵀ, lower triangle
            C = torch.from_numpy(syrk(sign, B[b].numpy().T, trans=1, lower=1))
            out[b] = C.tril() + C.tril(-1).mT
    return out.reshape(*broadcast_shapes(P.shape[:-2], v.shape[:-1]), p, p)
