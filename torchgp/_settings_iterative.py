"""The settings of the iterative path (CG, Lanczos quadrature, the preconditioner, tiles), re-exported by
:mod:`torchgp.settings`.

Each default is justified by the measurement written next to it.
"""

from __future__ import annotations

from torchgp._settings_base import _Flag, _Positive, _Setting


class deterministic_probes(_Flag):
    """Use the same random probe vectors on every call of the iterative path (default on)."""

    _default = True


class cg_warm_start(_Flag):
    """Start the iterative marginal likelihood's CG from the previous call's solutions (default off).

    Lin et al. (2024): between optimiser steps the systems ``K⁻¹[r, z₁..z_t]`` change little, so the last
    solutions are a better start than zero. They are reused only for the same training inputs (compared by
    value), the same number of right-hand sides and probes, dtype and batch shape; the log-determinant is
    still read off a cold Lanczos run of the probes (:mod:`torchgp.linalg.iterative`). Measured in training
    (``benchmarks/large_n.py --n 6000 --steps 15``, float32, CPU): 24 % fewer CG iterations but the same time,
    as each warm iteration also carries cold copies of the probes; and a repeated call at the same
    hyperparameters is no longer bit-identical. Hence off by default. With ``skip_logdet_forward`` too (Lin et al.
    skip the log-determinant's value) no cold copies run: measured in the same training, 614 CG iterations and
    68.3 CPU s against 810 and 79.9 s cold (−15 %), the same final loss as warm starts alone; for Adam-style
    training that does not read the loss's value.
    """

    _default = False


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

    The rank used grows with n as ``max(200, ⌈√(160 n)⌉)`` up to this cap (800 at n = 4000, 1789 at 20,000,
    4000 at 100,000; see ``torchgp.linalg.iterative.preconditioner_rank``), and the factorisation stops earlier
    once it is as good as it can usefully be. Rank 200 already keeps the iterative gradient within 0.1% of the
    exact one at n = 4000 (rank 100: 2.7%); at large n a higher rank cuts the CG iterations, each a pass over
    all n² kernel entries (n = 20,000, CG to 1e-4: rank 800 → 64 iterations, 1600 → 31, 2400 → 19). Memory
    is ``n · rank`` numbers (the factor, whose memory the Woodbury factor takes over; 1.6 GB at n = 10⁵ in
    float32), plus ``n · rank`` while the factor is built with probes drawn from it.
    """

    _default = 4000

    @classmethod
    def _validate(cls, value):
        if value is None or value < 0:
            raise ValueError(f"settings.max_preconditioner_size must be >= 0; got {value!r}.")
        return int(value)


class kernel_block_size(_Positive):
    """Side of the square tiles in which a kernel matrix is multiplied without being held whole.

    1024 (a 4 MiB float32 tile, cache-resident) measured fastest on CPU: 2.0 ns per kernel entry and
    product at n = 20,000 (ARD RBF, 33 right-hand sides, 1 thread) against 3.2 at 512 and 3.1 at 2048,
    and 6.2 with the former 1024-row × n blocks. Products of exponential stationary kernels from their feature rows
    (``fast_kernel_tiles``) use tiles of half this side (``torchgp.linalg.kernel_tiles.feature_tile_side``).
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


class ciq_samples(_Flag):
    """Draw ``MultivariateNormal.rsample`` from the symmetric root ``K^{1/2} ε`` computed by contour integral
    quadrature (Pleiss et al. 2020; :func:`torchgp.linalg.minres.ciq_mvn_samples`) instead of a Cholesky factor
    ``L ε`` (default off). Both have covariance ``K``; the CIQ root needs only matrix products."""

    _default = False


class minres_tolerance(_Positive):
    """Relative residual at which msMINRES stops (:func:`torchgp.linalg.minres.minres`), used by contour
    integral quadrature (``CiqVariationalStrategy``, ``ciq_samples``)."""

    _default = 1e-4


class num_contour_quadrature(_Positive):
    """Quadrature nodes of contour integral quadrature for ``K^{±1/2} b`` (Hale, Higham & Trefethen 2008,
    as used by Pleiss et al. 2020); the error falls exponentially in the number of nodes."""

    _default = 15


class cg_probe_tolerance(_Setting):
    """Relative residual at which the training forward's CG stops on the probe columns ``z`` (the Hutchinson
    and Lanczos probes); the data columns ``r`` stop at ``settings.cg_tolerance``.

    The probes' solves only feed a trace estimate whose own noise (``∝ 1/√num_trace_samples``) is far larger than
    the CG error at a moderate residual, and Gauss quadrature's error is about the square of CG's; columns that
    have finished cost no kernel products (:func:`torchgp.linalg.cg.pcg`). ``None`` (default): ``100 ·
    cg_tolerance`` capped at 1e-2 (1e-2 at the default ``cg_tolerance`` 1e-4, so a tighter ``cg_tolerance``
    tightens the probes too); a float sets it (never below ``cg_tolerance``). Measured (``benchmarks/large_n.py``,
    ARD RBF d = 8, ℓ = 0.5, σ² = 0.01, 32 probes): at n = 4000 in float64 over 3 probe seeds the gradient's
    error against the closed form was 2.13e-2 with the probes at 1e-4 and 2.10e-2 at 1e-2 (Hutchinson noise
    dominates either way); at n = 20,000 in float32 (one seed) 1.13e-2 and 1.14e-2, for 12 % less CPU.
    """

    _default = None

    @classmethod
    def _validate(cls, value):
        if value is not None and not (isinstance(value, (int, float)) and 0 < value < 1):
            raise ValueError(f"settings.cg_probe_tolerance must be None or a float in (0, 1); got {value!r}.")
        return None if value is None else float(value)


class fast_kernel_tiles(_Flag):
    """Multiply an exponential stationary kernel (RBF, periodic, a ``ScaleKernel`` over either) tile by tile from
    its feature rows, formed once per product, with one reused tile buffer (default on;
    :mod:`torchgp.linalg.kernel_tiles`); off, every tile is evaluated by the kernel module as any other kernel's.

    Both give the same products to rounding. Measured (``benchmarks/kernel_tiles.py``): see benchmarks/README.md.
    """

    _default = True
