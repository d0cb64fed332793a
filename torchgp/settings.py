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

import logging
import os

import torch

from torchgp._settings_base import _UNSET, _DtypeValue, _Flag, _NonNegative, _Positive, _Setting  # noqa: F401
from torchgp._settings_compat import (  # noqa: F401  (re-exported: GPyTorch's accepted settings)
    _dtype_value_context,
    _feature_flag,
    _linalg_dtype_cholesky,
    _linalg_dtype_symeig,
    _value_context,
    linalg_dtypes,
    memory_efficient,
    min_preconditioning_size,
    preconditioner_tolerance,
    skip_logdet_forward,
    terminate_cg_by_size,
    tridiagonal_jitter,
    use_keops,
)
from torchgp._settings_iterative import (  # noqa: F401  (re-exported: the iterative path's settings)
    cg_nonconvergence,
    cg_probe_tolerance,
    cg_tolerance,
    cg_warm_start,
    ciq_samples,
    deterministic_probes,
    eval_cg_tolerance,
    fast_kernel_tiles,
    kernel_block_size,
    max_cg_iterations,
    max_lanczos_quadrature_iterations,
    max_preconditioner_size,
    minres_tolerance,
    num_contour_quadrature,
    num_trace_samples,
)


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
    n × n intermediates but can be differentiated twice (Hessians of the MLL). Also off under
    :class:`trace_mode` and while ``torch.jit.trace`` records, whatever the flag says: a custom autograd
    node cannot be saved in a TorchScript graph.
    """

    _default = True

    @classmethod
    def on(cls) -> bool:
        return bool(cls.value()) and not trace_mode.on() and not torch.jit.is_tracing()

    @classmethod
    def off(cls) -> bool:
        return not cls.on()


class trace_mode(_Flag):
    """Plain torch operations only, so that ``torch.jit.trace`` records a graph that can be saved.

    Under it (and, in torchgp, whenever ``torch.jit.is_tracing()``), kernels skip their fused custom
    autograd node (:class:`fused_kernels`), and caches are not value-checked while tracing: a cache built
    by one ordinary call before tracing (GPyTorch's recipe: predict once, then trace) becomes a constant of
    the trace, so the traced model predicts from the state it was traced in. Slower than the ordinary path;
    use it for export only.

    Example:
        >>> import torch, torchgp
        >>> with torch.no_grad(), torchgp.settings.trace_mode():  # doctest: +SKIP
        ...     model(test_x)  # builds the caches
        ...     traced = torch.jit.trace(MeanVarModule(model), test_x)
    """


class use_toeplitz(_Flag):
    """Toeplitz structure of grid covariances (default on, as GPyTorch's).

    On: :class:`~torchgp.kernels.GridKernel` and :class:`~torchgp.kernels.GridInterpolationKernel` give a
    stationary base kernel on a regular grid the Toeplitz factors ``K_i`` of ``K_UU = K_1 ⊗ … ⊗ K_d``
    (:class:`~torchgp.linalg.toeplitz.ToeplitzOperator`: ``g_i`` numbers, products by FFT in
    ``O(g_i log g_i)``). Off: each factor is the evaluated dense ``g_i × g_i`` matrix (products in ``O(g_i²)``),
    the same numbers.
    """

    _default = True


class verbose_linalg(_Flag):
    """Log every linear-algebra call of :mod:`torchgp.linalg` at DEBUG on the ``torchgp.linalg`` logger (default off).

    As GPyTorch's flag: under it the solver choice (:func:`torchgp.linalg.solvers.factorize`: the kind and the
    operator's shape), each Cholesky factorisation of the marginal likelihood, each CG run (its right-hand sides
    at the start; iterations and worst residual at the end), each pivoted-Cholesky factor and each batch of
    Lanczos tridiagonal eigendecompositions is recorded. The logger (``settings.verbose_linalg.logger``) has
    level DEBUG and no handler of its own, so its records reach the application's handlers
    (``logging.basicConfig()`` prints them; GPyTorch instead attaches a handler to stdout).
    """

    logger = logging.getLogger("torchgp.linalg")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.DEBUG)


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


class progress_bars(_Setting):
    """Progress bars for computations predicted to take more than ~10 s (:mod:`torchgp._progress`).

    'auto': only when stderr is a terminal; 'always': every such loop's bar, at once, also when stderr
    is not a terminal; 'never': none. Default (None): the ``TORCHGP_PROGRESS`` environment variable
    ('auto', 'always'/'1', 'never'/'0'), else 'auto'.
    """

    _default = None

    @classmethod
    def _validate(cls, value):
        if value not in (None, "auto", "always", "never"):
            raise ValueError(f"settings.progress_bars must be 'auto', 'always' or 'never'; got {value!r}.")
        return value


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


# The public settings: those declared above and the accepted GPyTorch ones of ``torchgp._settings_compat``.
__all__ = sorted(n for n, v in list(globals().items()) if isinstance(v, type) and not n.startswith("_"))
