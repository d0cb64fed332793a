"""Settings as context managers, local to the thread (and asyncio task) that sets them.

Each setting is a class; ``with settings.cholesky_jitter(1e-4): ...`` changes it inside the
block only, and ``settings.cholesky_jitter.value(dtype)`` reads it. Values live in
:mod:`contextvars`, so a ``with`` block in one thread never changes another thread's
computation (new threads start from the defaults).

Example:
    >>> import torchgp
    >>> with torchgp.settings.max_cholesky_size(10):
    ...     torchgp.settings.max_cholesky_size.value()
    10
    >>> torchgp.settings.max_cholesky_size.value()
    4096
"""

from __future__ import annotations

import contextvars
import os
import threading

import torch


class _Setting:
    """A value held in a ContextVar; instances are context managers that set it."""

    _default = None
    _var: contextvars.ContextVar

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._var = contextvars.ContextVar(f"torchgp.settings.{cls.__name__}", default=cls._default)

    def __init__(self, value=None):
        self._new = self._validate(value)
        self._tokens = {}  # per thread: one instance may be entered from several threads at once

    @classmethod
    def _validate(cls, value):
        return value

    @classmethod
    def value(cls):
        return cls._var.get()

    def __enter__(self):
        self._tokens.setdefault(threading.get_ident(), []).append(self._var.set(self._new))
        return self

    def __exit__(self, *exc):
        stack = self._tokens[threading.get_ident()]
        self._var.reset(stack.pop())
        if not stack:
            del self._tokens[threading.get_ident()]
        return False


class _Flag(_Setting):
    """A boolean setting: ``with flag():`` / ``with flag(False):``; ``flag.on()``."""

    _default = False

    def __init__(self, state: bool = True):
        super().__init__(bool(state))

    @classmethod
    def on(cls) -> bool:
        return bool(cls._var.get())

    @classmethod
    def off(cls) -> bool:
        return not cls._var.get()


class _Positive(_Setting):
    @classmethod
    def _validate(cls, value):
        if value is None or not value > 0:
            raise ValueError(f"settings.{cls.__name__} must be positive; got {value!r}.")
        return value


class _DtypeValue(_Setting):
    """A float setting with one value for float32/half and one for float64."""

    _float = 1e-6
    _double = 1e-8

    def __init__(self, float_value=None, double_value=None, half_value=None):
        if float_value is not None and double_value is None and half_value is None:
            double_value = float_value  # one value given: use it for every dtype
        self._new = (
            self._float if float_value is None else float(float_value),
            self._double if double_value is None else float(double_value),
        )
        self._tokens = {}  # per thread: one instance may be entered from several threads at once

    def __init_subclass__(cls, **kwargs):
        cls._default = (cls._float, cls._double)
        super().__init_subclass__(**kwargs)

    @classmethod
    def value(cls, dtype: torch.dtype | None = None) -> float:
        f, d = cls._var.get()
        return d if dtype == torch.float64 else f


# --------------------------------------------------------------------------- flags
class debug(_Flag):
    """Extra input checks (on by default, as in GPyTorch)."""

    _default = True


class fast_pred_var(_Flag):
    """Accepted for compatibility; predictive variances are always computed exactly from the
    cached Cholesky factor (which is as fast as LOVE for n below ``max_cholesky_size``)."""


class fast_pred_samples(_Flag):
    """Accepted for compatibility (see :class:`fast_pred_var`)."""


class prior_mode(_Flag):
    """Exact GPs return their prior (not the posterior) in eval mode."""


class skip_posterior_variances(_Flag):
    """Predictive distributions carry only the mean (variances set to zero)."""


class detach_test_caches(_Flag):
    """Detach cached posterior quantities from the graph (default on)."""

    _default = True


class lazily_evaluate_kernels(_Flag):
    """Kernels return lazy kernel matrices (default on)."""

    _default = True


class trace_mode(_Flag):
    """Accepted for compatibility (TorchScript tracing needs no special path here)."""


class deterministic_probes(_Flag):
    """Use the same random probe vectors on every call of the iterative path (default on)."""

    _default = True


class use_toeplitz(_Flag):
    """Accepted for compatibility; has no effect."""


class verbose_linalg(_Flag):
    """Log which linear-algebra path was taken."""


# --------------------------------------------------------------------------- values
class cholesky_jitter(_DtypeValue):
    """First jitter (relative to the mean diagonal) tried when a Cholesky factorisation fails;
    it is multiplied by 10 on each further try."""

    _float = 1e-6
    _double = 1e-8


class cholesky_max_tries(_Positive):
    """How many times jitter is escalated before :class:`~torchgp.errors.NotPSDError`."""

    _default = 5


class min_variance(_DtypeValue):
    """Predictive variances are clamped below at this value."""

    _float = 1e-6
    _double = 1e-10


class min_fixed_noise(_DtypeValue):
    """Smallest per-point noise accepted by ``FixedNoiseGaussianLikelihood``."""

    _float = 1e-4
    _double = 1e-6


class variational_cholesky_jitter(_DtypeValue):
    """Jitter added to inducing-point kernel matrices."""

    _float = 1e-4
    _double = 1e-6


class max_cholesky_size(_Positive):
    """Largest n solved by Cholesky; larger systems use the iterative path (CG + Lanczos).

    The default 4096 keeps exact answers as long as they cost about as much as approximate ones on
    CPU: one MLL + gradient took 2.6 s by Cholesky at n = 4000 (float64, ``benchmarks/exact_mll.py``)
    and 3.1 s by the iterative path at n = 5000 (float32, ``benchmarks/large_n.py``).
    """

    _default = 4096


class max_cg_iterations(_Positive):
    """Iteration cap of conjugate gradients."""

    _default = 1000


class cg_tolerance(_Positive):
    """Relative residual at which CG stops during training."""

    _default = 1e-4


class eval_cg_tolerance(_Positive):
    """Relative residual at which CG stops for predictions."""

    _default = 1e-6


class max_lanczos_quadrature_iterations(_Positive):
    """Lanczos steps used for stochastic log-determinant quadrature."""

    _default = 100


class num_trace_samples(_Positive):
    """Number of Rademacher probe vectors for stochastic log-determinant and trace estimates."""

    _default = 32


class max_preconditioner_size(_Positive):
    """Maximum rank of the pivoted-Cholesky preconditioner of the iterative path (0 disables it).

    The rank used grows with n as ``max(200, ⌈√(32 n)⌉)`` up to this cap (about 360 at n = 4000,
    800 at 20,000, 1790 at 100,000; see ``torchgp.linalg.iterative.preconditioner_rank``), and the
    factorisation stops earlier once it is as good as it can usefully be. Rank 200 already keeps the
    iterative gradient within 0.1% of the exact one at n = 4000 (rank 100: 2.7%); at large n a higher
    rank cuts the CG iterations, each a pass over all n² kernel entries (n = 20,000: rank 300 →
    142 iterations, 1200 → 40). Memory is ``3 · n · rank`` numbers (see benchmarks/README.md).
    """

    _default = 2000

    @classmethod
    def _validate(cls, value):
        if value is None or value < 0:
            raise ValueError(f"settings.max_preconditioner_size must be >= 0; got {value!r}.")
        return int(value)


class kernel_block_size(_Positive):
    """Side of the square tiles in which a kernel matrix is multiplied without being held whole.

    1024 (a 4 MiB float32 tile, cache-resident) measured fastest on CPU: 2.0 ns per kernel entry and
    product at n = 20,000 (ARD RBF, 33 right-hand sides, 1 thread) against 3.2 at 512 and 3.1 at 2048,
    and 6.2 with the former 1024-row × n blocks.
    """

    _default = 1024


class cg_nonconvergence(_Setting):
    """What to do when CG stops before its tolerance: 'warn' (default) or 'raise'."""

    _default = "warn"

    @classmethod
    def _validate(cls, value):
        if value not in ("warn", "raise"):
            raise ValueError(f"settings.cg_nonconvergence must be 'warn' or 'raise'; got {value!r}.")
        return value


class solve_dtype(_Setting):
    """Dtype in which the marginal likelihood's solves run (``None``: the kernel's dtype).

    ``with settings.solve_dtype(torch.float64):`` computes kernels in float32 and solves in
    float64 (mixed precision).
    """

    _default = None


def _default_dense_budget() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


class max_dense_memory(_Positive):
    """Bytes a single dense kernel matrix may take (default: half the physical memory).

    A larger one is refused with :class:`~torchgp.errors.KernelMemoryError` before allocation.
    """

    _default = _default_dense_budget()


class num_likelihood_samples(_Positive):
    """Monte-Carlo samples used by likelihoods without quadrature."""

    _default = 10


class num_gauss_hermite_locs(_Positive):
    """Gauss–Hermite quadrature points for expected log-likelihoods."""

    _default = 20


class fast_computations:
    """GPyTorch compatibility: ``fast_computations(log_prob=False)`` forces Cholesky solves.

    Args:
        covar_root_decomposition, log_prob, solves: when any is False, the Cholesky path is used
            at every size (the iterative path is off).
    """

    def __init__(self, covar_root_decomposition=True, log_prob=True, solves=True):
        force = not (covar_root_decomposition and log_prob and solves)
        self._inner = max_cholesky_size(2**62) if force else None

    def __enter__(self):
        if self._inner is not None:
            self._inner.__enter__()
        return self

    def __exit__(self, *exc):
        if self._inner is not None:
            self._inner.__exit__(*exc)
        return False
