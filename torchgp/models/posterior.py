r"""The exact GP posterior as an explicit object (R&W 2006, Algorithm 2.1).

Built once from the training data and the current hyperparameters:

* ``L = chol(K + σ²I)`` (Cholesky path) or the noisy operator itself (iterative path, or a
  Woodbury/Kronecker factor): :func:`torchgp.linalg.solvers.factorize` makes the choice,
* ``α = (K + σ²I)⁻¹ (y − μ(X))``,

and then, for test inputs ``X*``:

* mean ``μ(X*) + K*ₓ α``                                   (Alg. 2.1 line 4)
* covariance ``K** − K*ₓ (K + σ²I)⁻¹ Kₓ*`` = ``K** − vᵀv``, ``v = L⁻¹Kₓ*``  (lines 5–6)

Test points are processed in blocks of rows of ``K*ₓ`` (``settings.prediction_block_size``), so the
mean of any number of test points takes bounded memory. The covariance is returned lazily
(:class:`PosteriorCovariance`): its diagonal costs O(n²t) exactly, or O(nkt) with LOVE under
``settings.fast_pred_var`` (:mod:`torchgp.models.love`), block by block, and never forms the
t × t matrix.
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp._progress import progress
from torchgp._shapes import broadcast_shapes
from torchgp.distributions import MultivariateNormal
from torchgp.linalg.interpolated import InterpolatedOperator, interp_matmul
from torchgp.linalg.operators import DenseOperator, KernelOperator, Operator, SumOperator, as_operator
from torchgp.linalg.operators.kernel import dense_product_bytes
from torchgp.linalg.solvers import factorize
from torchgp.models.love import (
    SKIPredictionCache,
    interpolated_parts,
    lanczos_root,
    love_inverse_root,
    stacked_weights,
)


def joint_blocks(joint_covar, n: int):
    """``(K(X*, X), K(X*, X*))`` of a joint train/test prior covariance ``(*batch, n + t, n + t)``.

    A symmetric kernel operator stays lazy: the cross-covariance as a :class:`CrossCovariance` (evaluated
    in blocks of test rows, never t × n at once), the test block as a kernel operator (dense when
    ``n + t ≤ settings.max_eager_kernel_size``). Any other covariance is made dense.
    """
    if isinstance(joint_covar, KernelOperator) and joint_covar.symmetric:
        x = joint_covar.x1
        kern, params = joint_covar.kernel, joint_covar.params
        x_tr, x_te = x[..., :n, :], x[..., n:, :]
        t = x_te.shape[-2]
        K_sx = CrossCovariance(
            lambda s, e: KernelOperator(kern, x_te[..., s:e, :], x_tr, **params).to_dense(), t, n, x.dtype
        )
        test_covar = KernelOperator(kern, x_te, x_te, **params)
        if n + t <= settings.max_eager_kernel_size.value():
            test_covar = DenseOperator(test_covar.to_dense())  # small: evaluate once, reuse for diag and dense
        return K_sx, test_covar
    if isinstance(joint_covar, Operator) and interpolated_parts(joint_covar) is not None:
        # KISS-GP (one W K_UU Wᵀ or an additive sum of them): rows from the operator's products, never (n + t)²
        return InterpolatedCross(joint_covar, n), joint_covar[..., n:, n:]
    C = joint_covar.to_dense() if not torch.is_tensor(joint_covar) else joint_covar
    return C[..., n:, :n], DenseOperator(C[..., n:, n:])


def block_rows(n: int) -> int:
    """Test points per block: ``max(1, settings.prediction_block_size // n)``."""
    return max(1, int(settings.prediction_block_size.value()) // max(n, 1))


class ExactPosterior:
    """Cached factorisation of the training covariance; predicts at any test inputs.

    Args:
        train_x: ``(*batch, n, d)``; train_y: ``(*batch, n)``.
        prior_mean: ``μ(X)`` ``(*batch, n)``; noisy_covar: ``K + σ²I`` as an operator ``(*batch, n, n)``.

    Attributes:
        L: ``(*batch, n, n)`` lower Cholesky factor of ``K + σ²I`` (None on the iterative path).
        alpha: ``(*batch', n, 1)`` with ``batch'`` the targets' batch (a fantasy batch may add dims).
    """

    def __init__(self, train_x, train_y, prior_mean, noisy_covar):
        op = as_operator(noisy_covar)
        self.train_x = train_x
        self.n = op.shape[-1]
        self._roots = {}
        r = (train_y - prior_mean).unsqueeze(-1)
        self.factor = factorize(op)  # the one solver choice (torchgp.linalg.solvers)
        self.use_cholesky = self.factor.kind == "cholesky"
        if self.use_cholesky:
            self.L = self.factor.cholesky.to(op.dtype)  # R&W Alg. 2.1 line 2
            self.alpha = torch.cholesky_solve(r.expand(*self.L.shape[:-1], 1), self.L)  # line 3
            self.op = None
        else:
            self.L = None
            self.op = op
            with settings.cg_tolerance(settings.eval_cg_tolerance.value()):
                self.alpha = self.factor.solve(r.expand(*op.shape[:-1], 1))

    @classmethod
    def from_factor(cls, train_x: torch.Tensor, L: torch.Tensor, alpha: torch.Tensor) -> ExactPosterior:
        """A posterior from a known factor ``L (*batch, n, n)`` and ``α (*batch', n, 1)`` (fantasy updates)."""
        new = object.__new__(cls)
        new.train_x, new.n, new._roots = train_x, L.shape[-1], {}
        new.use_cholesky, new.L, new.alpha, new.op, new.factor = True, L, alpha, None, None
        return new

    def detach(self) -> ExactPosterior:
        new = object.__new__(ExactPosterior)
        new.__dict__.update(self.__dict__)
        new._roots = {}
        new.alpha = self.alpha.detach()
        new.L = None if self.L is None else self.L.detach()
        return new

    @property
    def batch_shape(self) -> torch.Size:
        """Batch shape of the factor (``L`` or the operator)."""
        return (self.L if self.use_cholesky else self.op).shape[:-2]

    def half_solve(self, K_xs: torch.Tensor) -> torch.Tensor:
        """``L⁻¹ Kₓ*`` (Cholesky path) — ``(*batch, n, t)``."""
        return torch.linalg.solve_triangular(self.L, K_xs, upper=False)

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``(K + σ²I)⁻¹ rhs`` for ``rhs (*batch, n, m)`` (test batches folded into columns)."""
        if self.use_cholesky:
            return _batched_columns(lambda r: torch.cholesky_solve(r, self.L), self.batch_shape, rhs)
        with settings.cg_tolerance(settings.eval_cg_tolerance.value()):
            return _batched_columns(self.factor.solve, self.batch_shape, rhs)

    def train_matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        """``(K + σ²I) rhs`` (``L Lᵀ rhs`` on the Cholesky path), ``(*batch, n, m)``."""
        if self.use_cholesky:
            return self.L @ (self.L.mT @ rhs)
        return self.op.matmul(rhs)

    def love_root(self) -> torch.Tensor:
        """LOVE's ``R (*batch, n, k)``, ``(K + σ²I)⁻¹ ≈ R Rᵀ``, ``k = settings.max_root_decomposition_size``.

        For ``n ≤ k`` on the Cholesky path ``R = L⁻ᵀ`` exactly (Lanczos would reach full rank).
        Built on first use and kept with the posterior.
        """
        k = int(settings.max_root_decomposition_size.value())
        if k in self._roots:
            return self._roots[k]
        ref = self.alpha
        if self.use_cholesky and self.n <= k:
            eye = torch.eye(self.n, dtype=ref.dtype, device=ref.device).expand_as(self.L)
            root = torch.linalg.solve_triangular(self.L, eye, upper=False).mT
        else:
            matmul = self.train_matmul
            if not self.use_cholesky and self.op.dense_nbytes() <= dense_product_bytes():
                K = self.op.to_dense()  # small enough: one evaluation instead of one per Lanczos step
                matmul = K.__matmul__
            root = love_inverse_root(matmul, self.batch_shape, self.n, k, ref.dtype, ref.device)
        if not torch.jit.is_tracing():  # built while tracing, it is part of that trace: every trace rebuilds it
            self._roots[k] = root
        return root

    def ski_cache(self, cross: InterpolatedCross, k: int | None) -> SKIPredictionCache | None:
        """KISS-GP grid caches (:class:`~torchgp.models.love.SKIPredictionCache`) for this posterior, or None.

        ``k`` is LOVE's rank (None: the mean cache only). Built once per posterior and rank; None when the
        targets carry batch dimensions the training covariance lacks (fantasy batches), which then take the
        row-by-row path.
        """
        if tuple(self.alpha.shape[:-2]) != tuple(cross.train.shape[:-2]):
            return None
        key = ("ski", k)
        if key not in self._roots:
            self._roots[key] = SKIPredictionCache(cross.train, self.train_matmul, self.alpha, k)
        return self._roots[key]

    def predict(self, test_mean: torch.Tensor, K_sx, test_covar) -> tuple[torch.Tensor, Operator]:
        """Predictive mean ``(*batch, t)`` and lazy covariance ``(*batch, t, t)``.

        Args:
            test_mean: ``μ(X*)`` ``(*batch, t)``.
            K_sx: ``K(X*, X)`` ``(*batch, t, n)``: a dense tensor or a :class:`CrossCovariance`.
            test_covar: ``K(X*, X*)`` operator ``(*batch, t, t)``.
        """
        cross = K_sx if isinstance(K_sx, CrossCovariance) else CrossCovariance.from_tensor(K_sx)
        cache = self.ski_cache(cross, None) if isinstance(cross, InterpolatedCross) else None
        if cache is not None:  # KISS-GP: k*ᵀα = w*ᵀ (K_UU Wᵀ α), O(4^d) per test point (Pleiss et al. 2018, §5)
            mean = test_mean + cache.mean(cross.indices, cross.values)
            return mean, PosteriorCovariance(self, cross, as_operator(test_covar))
        parts = []
        for _, _, K_b in cross.blocks(keep=True):
            parts.append((K_b @ self.alpha).squeeze(-1))  # R&W Alg. 2.1 line 4, one block of rows
        if not parts:
            parts = [test_mean[..., :0]]
        mean = test_mean + torch.cat(parts, -1)
        return mean, PosteriorCovariance(self, cross, as_operator(test_covar))


class CrossCovariance:
    """``K(X*, X)``, ``(*batch, t, n)``, evaluated in blocks of rows and never held whole for large t.

    Args:
        block_fn: ``(start, stop) ↦`` dense rows ``start:stop``, ``(*batch, stop - start, n)``.
        t: number of test points; n: number of training points.
    """

    def __init__(self, block_fn, t: int, n: int, dtype: torch.dtype):
        self.block_fn, self.t, self.n, self.dtype = block_fn, t, n, dtype
        self.kept = None  # the whole matrix, when it fits in one block

    @classmethod
    def from_tensor(cls, K_sx: torch.Tensor) -> CrossCovariance:
        new = cls(lambda s, e: K_sx[..., s:e, :], K_sx.shape[-2], K_sx.shape[-1], K_sx.dtype)
        new.kept = K_sx
        return new

    def __mul__(self, other: torch.Tensor) -> CrossCovariance:
        """Every block times ``other`` broadcast as ``(*batch, 1, n)`` (e.g. a mask of training columns)."""
        if self.kept is not None:
            return CrossCovariance.from_tensor(self.kept * other)
        return CrossCovariance(lambda s, e: self.block_fn(s, e) * other, self.t, self.n, self.dtype)

    def blocks(self, keep: bool = False):
        """Yield ``(start, stop, rows)`` over the test points; with ``keep`` a single block is retained."""
        if self.kept is not None:
            yield 0, self.t, self.kept
            return
        rows = block_rows(self.n)
        # a bar appears if the pass over the blocks is predicted to take more than ~10 s (torchgp._progress)
        with progress(-(-self.t // rows), "torchgp: predicting", unit="block") as bar:
            for s in range(0, self.t, rows):
                e = min(self.t, s + rows)
                K_b = self.block_fn(s, e)
                if keep and s == 0 and e == self.t:
                    self.kept = K_b
                yield s, e, K_b
                bar.update()


class InterpolatedCross(CrossCovariance):
    """``K(X*, X) = W* K_UU Wᵀ`` of a KISS-GP joint covariance ``(*batch, n + t, n + t)`` (or a sum of such terms).

    Rows are evaluated block by block like any cross-covariance; it also keeps what the grid caches need:
    the training covariance ``train`` ``(*batch, n, n)`` and the test points' interpolation weights
    ``indices, values (*batch, t, 4^d)`` (for a sum, onto the stacked grids: :func:`~torchgp.models.love.stacked_weights`).
    """

    def __init__(self, joint: Operator, n: int):
        t = joint.shape[-1] - n
        parts = interpolated_parts(joint)
        super().__init__(lambda s, e: sum(p[..., n + s : n + e, :n].to_dense() for p in parts), t, n, joint.dtype)
        # W K_UU Wᵀ on the training rows, built symmetric (one weight pair) as the grid caches need
        train = [InterpolatedOperator(p.base, p.left_indices[..., :n, :], p.left_values[..., :n, :]) for p in parts]
        self.train = train[0] if len(train) == 1 else SumOperator(*train)
        self.indices, self.values = stacked_weights(parts, slice(n, None))


class PosteriorCovariance(Operator):
    """``K** − K*ₓ (K + σ²I)⁻¹ Kₓ*``, ``(*batch, t, t)``, lazy; rows of NaN test inputs stay in their rows.

    The mode is fixed when it is built: exact, LOVE (under ``settings.fast_pred_var``: ``K*ₓ R Rᵀ Kₓ*``),
    or none (under ``settings.skip_posterior_variances``: a zero covariance, no work at all).
    """

    def __init__(self, posterior: ExactPosterior, cross: CrossCovariance, test_covar: Operator):
        self.posterior, self.cross, self.test_covar = posterior, cross, test_covar
        ref = posterior.alpha
        batch = broadcast_shapes(posterior.batch_shape, ref.shape[:-2], test_covar.shape[:-2])
        self.shape = torch.Size([*batch, cross.t, cross.t])
        self.dtype, self.device = ref.dtype, ref.device
        self.skip = settings.skip_posterior_variances.on()
        self.love = settings.fast_pred_var.on()
        self.fast_samples = settings.fast_pred_samples.on()
        self._explained = None
        self._ski = None  # KISS-GP under LOVE: the grid variance cache G, so w*ᵀ G is a row of the root
        if self.love and not self.skip and isinstance(cross, InterpolatedCross):
            self._ski = posterior.ski_cache(cross, int(settings.max_root_decomposition_size.value()))

    def _ski_rows(self) -> torch.Tensor:
        """``A = W* G`` ``(*batch, t, k)`` with ``K*ₓ K̂⁻¹ Kₓ* ≈ A Aᵀ`` (O(4^d k) per test point)."""
        return interp_matmul(self.cross.indices, self.cross.values, self._ski.covar_cache)

    @property
    def K_sx(self) -> torch.Tensor:
        """The dense ``K(X*, X)`` ``(*batch, t, n)`` (formed only when asked)."""
        return torch.cat([K_b for _, _, K_b in self.cross.blocks()], -2)

    def _reduce_block(self, K_b: torch.Tensor, use_root: bool) -> torch.Tensor:
        """Rows ``A_b`` with ``K_b K̂⁻¹ K_bᵀ = A_b A_bᵀ`` (Cholesky, LOVE), or ``K̂⁻¹ K_bᵀ`` (iterative)."""
        p = self.posterior
        if use_root:
            return K_b @ p.love_root()  # (*batch, rows, k), Pleiss et al. (2018) eq. 7
        if p.use_cholesky:
            return _batched_columns(p.half_solve, p.batch_shape, K_b.mT).mT  # v = L⁻¹Kₓ*, Alg. 2.1 line 5
        return p.solve(K_b.mT).mT

    def _symmetric(self, use_root: bool) -> bool:
        return use_root or self.posterior.use_cholesky

    def diagonal(self):
        if self.skip:
            return torch.zeros(self.shape[:-1], dtype=self.dtype, device=self.device)
        if self._explained is None and self._ski is not None:
            self._explained = self._ski.variance_reduction(self.cross.indices, self.cross.values)
        if self._explained is None:
            parts = []
            for _, _, K_b in self.cross.blocks():
                A_b = self._reduce_block(K_b, self.love)
                parts.append(A_b.pow(2).sum(-1) if self._symmetric(self.love) else (K_b * A_b).sum(-1))
            self._explained = torch.cat(parts, -1)
        return self.test_covar.diagonal() - self._explained  # diagonal of Alg. 2.1 line 6

    def _dense(self):
        if self.skip:
            return torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        if self._ski is not None:
            A = self._ski_rows()
            return self.test_covar.to_dense() - A @ A.mT
        A = torch.cat([self._reduce_block(K_b, self.love) for _, _, K_b in self.cross.blocks()], -2)
        reduction = A @ A.mT if self._symmetric(self.love) else self.K_sx @ A.mT
        return self.test_covar.to_dense() - reduction  # R&W Alg. 2.1 line 6

    def matmul(self, rhs, use_root: bool | None = None):
        """``Σ* rhs`` for ``rhs (*batch, t, m)``, two passes over the blocks of ``K*ₓ``."""
        if self.skip:
            return torch.zeros(*self.shape[:-1], rhs.shape[-1], dtype=self.dtype, device=self.device)
        use_root = self.love if use_root is None else use_root
        out = self.test_covar.matmul(rhs)
        if use_root and self._ski is not None:
            A = self._ski_rows()
            return out - A @ (A.mT @ rhs)
        if use_root:
            u = sum((self._reduce_block(K_b, True).mT @ rhs[..., s:e, :] for s, e, K_b in self.cross.blocks()))
            parts = [self._reduce_block(K_b, True) @ u for _, _, K_b in self.cross.blocks()]
        else:
            u = sum((K_b.mT @ rhs[..., s:e, :] for s, e, K_b in self.cross.blocks()))
            w = self.posterior.solve(u)  # K̂⁻¹ Kₓ* rhs
            parts = [K_b @ w for _, _, K_b in self.cross.blocks()]
        return out - torch.cat(parts, -2)

    def root(self) -> torch.Tensor:
        """A rank-``k`` root ``S (*batch, t, k)`` of this covariance by Lanczos, through LOVE's root."""
        k = int(settings.max_root_decomposition_size.value())
        return lanczos_root(
            lambda v: self.matmul(v, use_root=True), self.shape[:-2], self.shape[-1], k, self.dtype, self.device
        )


class PosteriorMultivariateNormal(MultivariateNormal):
    """The predictive ``MultivariateNormal`` of an exact GP; under ``settings.fast_pred_samples`` its
    samples come from a rank-``k`` Lanczos root of the covariance (built from LOVE's root), O(t·k) each.
    """

    def rsample(self, sample_shape=torch.Size(), base_samples: torch.Tensor | None = None) -> torch.Tensor:
        """Samples ``(*sample_shape, *batch, t)``; fast ones take ``base_samples (..., *batch, k)``."""
        cov = self.lazy_covariance_matrix
        fast = isinstance(cov, PosteriorCovariance) and (cov.fast_samples or settings.fast_pred_samples.on())
        if not fast or cov.skip or (base_samples is not None and base_samples.shape[-1] == self.event_shape[0]):
            return super().rsample(sample_shape, base_samples)
        S = cov.root().expand(*self.batch_shape, -1, -1)
        if base_samples is None:
            shape = torch.Size(sample_shape) + S.shape[:-2] + S.shape[-1:]
            base_samples = torch.randn(shape, dtype=S.dtype, device=S.device)
        return self.mean + (S @ base_samples.unsqueeze(-1)).squeeze(-1)


def _batched_columns(fn, train_batch: torch.Size, rhs: torch.Tensor) -> torch.Tensor:
    """``fn(rhs)`` for ``rhs (*batch, n, t)`` when ``fn``'s matrix has the smaller batch ``train_batch``.

    Test batches are folded into columns (one solve, no copy of the n × n factor per test batch).
    """
    batch = rhs.shape[:-2]
    if tuple(batch) == tuple(train_batch):
        return fn(rhs)
    out_batch = broadcast_shapes(batch, train_batch)
    k = len(out_batch) - len(train_batch)
    if tuple(out_batch[k:]) != tuple(train_batch):  # the test batch does not only add leading dims
        return fn(rhs.expand(*out_batch, *rhs.shape[-2:]))
    rhs = rhs.expand(*out_batch, *rhs.shape[-2:])
    lead = out_batch[:k]
    n, t = rhs.shape[-2], rhs.shape[-1]
    # (*lead, *train_batch, n, t) → (*train_batch, n, lead·t)
    perm = [*range(k, k + len(train_batch)), k + len(train_batch), *range(k), k + len(train_batch) + 1]
    folded = rhs.permute(*perm).reshape(*train_batch, n, -1)
    out = fn(folded).reshape(*train_batch, n, *lead, t)
    inv = [
        *range(len(train_batch) + 1, len(train_batch) + 1 + k),
        *range(len(train_batch) + 1),
        len(train_batch) + 1 + k,
    ]
    return out.permute(*inv)
