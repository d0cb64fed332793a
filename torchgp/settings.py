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

_UNSET = object()  # the ContextVar holds this until a ``with`` block sets a value


class _Setting:
    """A value held in a ContextVar; instances are context managers that set it.

    Outside every ``with`` block a setting reads ``cls._global_value`` (its default), which code written
    for GPyTorch may assign (``settings.max_cholesky_size._global_value = 2000``, or ``_set_value``); that
    changes the value for every thread.
    """

    _default = None
    _var: contextvars.ContextVar

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._var = contextvars.ContextVar(f"torchgp.settings.{cls.__name__}", default=_UNSET)
        if "_global_value" not in cls.__dict__:
            cls._global_value = cls._default

    def __init__(self, value=None):
        self._new = self._validate(value)
        self._tokens = {}  # per thread: one instance may be entered from several threads at once

    @classmethod
    def _validate(cls, value):
        return value

    @classmethod
    def value(cls):
        v = cls._var.get()
        return cls._global_value if v is _UNSET else v

    @classmethod
    def _set_value(cls, value) -> None:
        """Set the value outside every ``with`` block, for all threads (GPyTorch's classmethod)."""
        cls._global_value = cls._validate(value)

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
        return bool(cls.value())

    @classmethod
    def off(cls) -> bool:
        return not cls.value()

    @classmethod
    def is_default(cls) -> bool:
        """Whether the flag has its default state: no ``with`` block sets it and ``_set_state`` did not change it."""
        return cls._var.get() is _UNSET and bool(cls._global_value) == bool(cls._default)

    @classmethod
    def _set_state(cls, state) -> None:
        """Set the state outside every ``with`` block, for all threads (GPyTorch's classmethod)."""
        cls._global_value = bool(state)


class _Positive(_Setting):
    @classmethod
    def _validate(cls, value):
        if value is None or not value > 0:
            raise ValueError(f"settings.{cls.__name__} must be positive; got {value!r}.")
        return value


class _NonNegative(_Setting):
    """A size or count for which 0 means "never" (e.g. ``max_cholesky_size(0)``: always iterative)."""

    @classmethod
    def _validate(cls, value):
        if value is None or not value >= 0:
            raise ValueError(f"settings.{cls.__name__} must be >= 0; got {value!r}.")
        return value


class _DtypeValue(_Setting):
    """A float setting with one value for float32/half and one for float64."""

    _float = 1e-6
    _double = 1e-8

    _half = None  # None: half precision uses the float32 value

    def __init__(self, float_value=None, double_value=None, half_value=None):
        if float_value is not None and double_value is None and half_value is None:
            double_value = float_value  # one value given: use it for every dtype
        f, d, h = self._current()
        self._new = (
            f if float_value is None else float(float_value),
            d if double_value is None else float(double_value),
            h if half_value is None else float(half_value),
        )
        self._tokens = {}  # per thread: one instance may be entered from several threads at once

    def __init_subclass__(cls, **kwargs):
        cls._default = (cls._float, cls._double, cls._half)
        super().__init_subclass__(**kwargs)
        # GPyTorch's class attributes, read (and assignable) outside every ``with`` block
        cls._global_float_value, cls._global_double_value, cls._global_half_value = cls._default

    @classmethod
    def _current(cls):
        v = cls._var.get()
        return (cls._global_float_value, cls._global_double_value, cls._global_half_value) if v is _UNSET else v

    @classmethod
    def value(cls, dtype: torch.dtype | None = None) -> float:
        """The value for ``dtype`` (a dtype or a tensor; default float32)."""
        if torch.is_tensor(dtype):
            dtype = dtype.dtype
        f, d, h = cls._current()
        if dtype == torch.float64:
            return d
        if dtype in (torch.float16, torch.bfloat16):
            return f if h is None else h
        return f

    @classmethod
    def _set_value(cls, float_value=None, double_value=None, half_value=None) -> None:
        """Set the values outside every ``with`` block, for all threads (GPyTorch's classmethod)."""
        if float_value is not None:
            cls._global_float_value = float(float_value)
        if double_value is not None:
            cls._global_double_value = float(double_value)
        if half_value is not None:
            cls._global_half_value = float(half_value)


# --------------------------------------------------------------------------- flags
class debug(_Flag):
    """Extra input checks (on by default, as in GPyTorch)."""

    _default = True


class fast_pred_var(_Flag):
    """Exact-GP predictive variances by LOVE (Pleiss et al. 2018): a rank-``max_root_decomposition_size``
    Lanczos root ``R`` with ``(K + σ²I)⁻¹ ≈ R Rᵀ``, built once per posterior, so each test point costs
    O(n·k) instead of O(n²). Decided when the prediction is made (``model(X*)`` inside the block).

    ``num_probe_vectors`` (GPyTorch's keyword) is accepted and ignored: the root here is built from one
    deterministic start vector (``fast_pred_var.num_probe_vectors()`` reports 1)."""

    _num_probe_vectors = 1

    def __init__(self, state: bool = True, num_probe_vectors: int = 1):
        super().__init__(state)
        if int(num_probe_vectors) < 1:
            raise ValueError(f"settings.fast_pred_var: num_probe_vectors must be >= 1; got {num_probe_vectors!r}.")

    @classmethod
    def num_probe_vectors(cls) -> int:
        return cls._num_probe_vectors


class fast_pred_samples(_Flag):
    """Exact-GP posterior samples from a rank-``max_root_decomposition_size`` Lanczos root of the
    predictive covariance, whose products go through LOVE's root (see :class:`fast_pred_var`)."""


class prior_mode(_Flag):
    """Exact GPs return their prior (not the posterior) in eval mode."""


class skip_posterior_variances(_Flag):
    """Predictive distributions carry only the mean (variances set to zero, and no O(n²t) work
    is done for them when an exact GP predicts inside the block)."""


class detach_test_caches(_Flag):
    """Detach cached posterior quantities from the graph (default on)."""

    _default = True


class lazily_evaluate_kernels(_Flag):
    """Kernels return lazy kernel matrices (default on)."""

    _default = True


class sgpr_diagonal_correction(_Flag):
    """In eval mode, ``InducingPointKernel``'s ``k(X, X)`` gets the diagonal ``max(0, k_xx − Q_xx)`` added,
    so its prior variances are the base kernel's (default on, as in GPyTorch; train mode never adds it)."""

    _default = True


class fused_kernels(_Flag):
    """Stationary kernels build their matrix and its gradient in one fused autograd node (default on).

    Off: autograd differentiates each kernel's element-wise profile, which is slower and keeps more
    n × n intermediates but can be differentiated twice (Hessians of the MLL).
    """

    _default = True


class trace_mode(_Flag):
    """Accepted for compatibility (TorchScript tracing needs no special path here)."""


class deterministic_probes(_Flag):
    """Use the same random probe vectors on every call of the iterative path (default on)."""

    _default = True


class use_toeplitz(_Flag):
    """Accepted for compatibility; has no effect."""


class verbose_linalg(_Flag):
    """Accepted, no effect yet: GPyTorch logs each linear-algebra call under it; torchgp's solver choice
    (Cholesky or iterative, ``torchgp.linalg.solvers``) does not log."""


# --------------------------------------------------------------------------- values
class cholesky_jitter(_DtypeValue):
    """First jitter (relative to the mean diagonal) tried when a Cholesky factorisation fails;
    it is multiplied by 10 on each further try."""

    _float = 1e-6
    _double = 1e-8


class cholesky_max_tries(_NonNegative):
    """How many times jitter is escalated before :class:`~torchgp.errors.NotPSDError`."""

    _default = 5


class min_variance(_DtypeValue):
    """Predictive variances are clamped below at this value."""

    _float = 1e-6
    _double = 1e-10
    _half = 1e-3


class min_fixed_noise(_DtypeValue):
    """Smallest per-point noise accepted by ``FixedNoiseGaussianLikelihood``."""

    _float = 1e-4
    _double = 1e-6
    _half = 1e-3


class variational_cholesky_jitter(_DtypeValue):
    """Jitter added to inducing-point kernel matrices."""

    _float = 1e-4
    _double = 1e-6


class max_cholesky_size(_NonNegative):
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


class max_root_decomposition_size(_Positive):
    """Rank of Lanczos roots: LOVE's ``R`` under ``fast_pred_var`` and the sample root under
    ``fast_pred_samples`` (GPyTorch's default 100)."""

    _default = 100


class prediction_block_size(_Positive):
    """Entries of one block of the test/train cross-covariance ``K(X*, X)`` in exact-GP prediction.

    Test points are processed ``max(1, size // n)`` at a time (means, variances, covariance products),
    so memory stays bounded for any number of them. The default 2²² (32 MiB in float64; 4194 test
    points per block at n = 1000): at n = 1000, t = 10⁵ (float32, LOVE, 1 thread) block sizes 2²⁰,
    2²² and 2²⁴ took 2.7, 3.1 and 4.1 s and peaked at 0.32, 0.36 and 0.49 GB RSS
    (``benchmarks/predict_chunked.py``); the larger default keeps blocks of a few hundred rows at
    n ≈ 10⁴, where each block of exact variances on the iterative path is one CG solve.
    """

    _default = 2**22


class max_eager_kernel_size(_Positive):
    """Exact-GP prediction with ``n + t`` at most this (GPyTorch's default 512) evaluates the test
    covariance ``K(X*, X*)`` densely once, with the cross-covariance, instead of keeping it lazy
    (its diagonal and the full matrix then cost no further kernel evaluations)."""

    _default = 512


class max_dense_memory(_Positive):
    """Bytes a single dense kernel matrix may take (default: half the physical memory).

    A larger one is refused with :class:`~torchgp.errors.KernelMemoryError` before allocation.
    """

    _default = _default_dense_budget()


class observation_nan_policy(_Setting):
    """What NaN training targets mean: 'ignore' (default), 'mask' or 'fill' (GPyTorch's names).

    * ``ignore``: targets are not scanned; a NaN target is refused when the training data is set and
      makes a loss computed anyway non-finite (with an error naming the points).
    * ``mask``: NaN targets are missing observations. The exact MLL is the log marginal of the
      observed points (each batch member its own subset; still divided by the number of rows ``n``,
      as in GPyTorch), and the ExactGP posterior conditions on the observed points only
      (:mod:`torchgp.models.missing_data`). The variational objectives sum over the observed points,
      leaving out a point missing in any batch member (GPyTorch's rule for pointwise terms).
    * ``fill``: GPyTorch fills NaNs with a dummy value and cuts those rows and columns out of the
      covariance so that no tensor changes shape; torchgp always computes that way, so 'fill' gives
      the same (exact) results as 'mask', in the exact MLL too.
    """

    _default = "ignore"
    _fill_value = -999.0

    @classmethod
    def _validate(cls, value):
        if value not in ("ignore", "mask", "fill"):
            raise ValueError(f"settings.observation_nan_policy must be 'ignore', 'mask' or 'fill'; got {value!r}.")
        return value

    @staticmethod
    def _get_observed(observations, event_shape) -> torch.Tensor:
        """``(*event_shape)`` mask of the entries observed in every batch member of ``observations``."""
        return ~torch.any(torch.isnan(observations.reshape(-1, *event_shape)), dim=0)

    @classmethod
    def _fill_tensor(cls, observations) -> torch.Tensor:
        """``observations`` with NaNs replaced by the fill value."""
        return torch.nan_to_num(observations, nan=cls._fill_value)


class num_likelihood_samples(_Positive):
    """Monte-Carlo samples used by likelihoods without quadrature."""

    _default = 10


class num_gauss_hermite_locs(_Positive):
    """Gauss–Hermite quadrature points for expected log-likelihoods."""

    _default = 20


# --------------------------------------------------------------------------- GPyTorch settings with no effect here
# Each is accepted with GPyTorch's values so that code written for GPyTorch runs; its docstring says why it
# changes nothing in torchgp.


class ciq_samples(_Flag):
    """Accepted, no effect: posterior samples are drawn from a Cholesky (or Lanczos) root; torchgp has no
    contour-integral-quadrature (CIQ) sampler for this flag to select."""


class memory_efficient(_Flag):
    """Accepted, no effect: it selects Toeplitz arithmetic for GPyTorch's grid inducing-point modules, which
    torchgp does not have; its kernel matrices are always multiplied block by block (``kernel_block_size``)."""


class use_keops(_Flag):
    """Accepted, no effect (default on): torchgp has no KeOps kernels; its kernel matrices are computed in tiles
    that are never held whole, which serves the memory purpose KeOps serves in GPyTorch."""

    _default = True


class skip_logdet_forward(_Flag):
    """Accepted, no effect: the iterative path reads the log-determinant off the Lanczos coefficients of the
    CG run its solve needs anyway (``torchgp.linalg.lanczos``), so skipping it would save only small
    tridiagonal eigendecompositions."""


class terminate_cg_by_size(_Flag):
    """Accepted, no effect: CG stops at ``max_cg_iterations`` or at its tolerance; for an ``n × n`` system
    it cannot usefully run more than ``n`` iterations anyway (exact arithmetic converges in n)."""


class minres_tolerance(_Positive):
    """Accepted, no effect: torchgp has no MINRES solver (it serves GPyTorch's CIQ sampler)."""

    _default = 1e-4


class num_contour_quadrature(_Positive):
    """Accepted, no effect: quadrature points of contour integral quadrature, which torchgp does not have."""

    _default = 15


class tridiagonal_jitter(_Positive):
    """Accepted, no effect: Lanczos tridiagonal matrices are eigendecomposed without jitter, and their
    eigenvalues are clamped at the smallest positive number of the dtype (``torchgp.linalg.lanczos``)."""

    _default = 1e-6


class min_preconditioning_size(_NonNegative):
    """Accepted, no effect: the iterative path always uses its pivoted-Cholesky preconditioner, whose rank
    is chosen from n (see ``max_preconditioner_size``); it only runs above ``max_cholesky_size`` anyway."""

    _default = 2000


class preconditioner_tolerance(_Positive):
    """Accepted, no effect: the pivoted-Cholesky preconditioner stops by its own trace-error rule
    (``torchgp.linalg.pivoted_cholesky``), not at this tolerance."""

    _default = 1e-3


class _linalg_dtype_symeig(_Setting):
    """Dtype of symmetric eigendecompositions in GPyTorch (default float64); see :class:`linalg_dtypes`."""

    _default = torch.float64


class _linalg_dtype_cholesky(_Setting):
    """Dtype of Cholesky factorisations in GPyTorch (default float64); see :class:`linalg_dtypes`."""

    _default = torch.float64


class linalg_dtypes:
    """Accepted: sets GPyTorch's two linear-algebra dtypes inside the block (readable as
    ``settings._linalg_dtype_cholesky.value()``); torchgp's factorisations run in the matrix's dtype, and
    mixed precision is :class:`solve_dtype`.

    Args:
        default: dtype for both (default float64).
        symeig, cholesky: override one of them.
    """

    def __init__(self, default=torch.float64, symeig=None, cholesky=None):
        self._inner = (
            _linalg_dtype_symeig(symeig if symeig is not None else default),
            _linalg_dtype_cholesky(cholesky if cholesky is not None else default),
        )

    def __enter__(self):
        for setting in self._inner:
            setting.__enter__()
        return self

    def __exit__(self, *exc):
        for setting in reversed(self._inner):
            setting.__exit__(*exc)
        return False


# GPyTorch's base-class names, for code that subclasses them
_feature_flag = _Flag
_value_context = _Setting
_dtype_value_context = _DtypeValue


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
