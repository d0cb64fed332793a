r"""The exact posterior of a multitask GP (outputs ``(*batch, n, t)``), R&W (2006) Alg. 2.1 on ``nt`` rows.

Three cases, chosen from the structure of the training covariance ``A = K + noise``:

* **Kronecker** ``A = K_1 ⊗ K_2 + S_1 ⊗ S_2`` (a :class:`~torchgp.kernels.MultitaskKernel` with a
  :class:`~torchgp.likelihoods.MultitaskGaussianLikelihood`): with the per-factor eigendecompositions of
  :class:`~torchgp.linalg.kronecker_solve.KroneckerEig` (``A⁻¹ = (P_1 ⊗ P_2) W (P_1 ⊗ P_2)ᵀ``) and the test
  cross-covariance ``C_1 ⊗ C_2``,

  .. math::
      \mu_* = \mathrm{vec}(C_1\, Α\, C_2^\top),\qquad
      \mathrm{diag}\,\Sigma_* = \mathrm{diag}(T_1) \otimes \mathrm{diag}(T_2)
          - \mathrm{vec}\big((U\circ U)\, W\, (V\circ V)^\top\big),

  ``U = C_1 P_1``, ``V = C_2 P_2``, ``T_i`` the test-test factors: ``O(n³ + t³)`` once, then ``O(n_* n (n + t))``;
  no ``nt × nt`` matrix is formed.
* **independent tasks** (block-interleaved, ``MultitaskMultivariateNormal.from_batch_mvn``, or block-diagonal
  task-major): one Cholesky per task.
* anything else: the dense ``nt × nt`` solve of :func:`torchgp.linalg.solvers.factorize`.
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.distributions.multitask_multivariate_normal import (
    MultitaskMultivariateNormal,
    flatten_tasks,
    unflatten_tasks,
)
from torchgp.errors import InputError, ModelTypeError
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.linalg.kronecker_solve import KroneckerEig, kronecker_sum
from torchgp.linalg.operators import (
    BlockDiagOperator,
    BlockInterleavedOperator,
    DenseOperator,
    KroneckerProductOperator,
    Operator,
)
from torchgp.linalg.operators.kronecker import kron_apply, kron_vectors
from torchgp.linalg.solvers import factorize
from torchgp.models.missing_data import decouple_missing, masking_on

__all__ = ["MultitaskExactPosterior", "KroneckerPosteriorCovariance", "multitask_posterior_at"]


def _dense(x) -> torch.Tensor:
    return x.to_dense() if isinstance(x, Operator) else x


class KroneckerPosteriorCovariance(Operator):
    """``T_1 ⊗ T_2 − (U ⊗ V) W (U ⊗ V)ᵀ``, ``(*batch, p_* q_*, p_* q_*)``, never formed unless asked.

    Args:
        T1 ``(*b, p*, p*)``, T2 ``(*b, q*, q*)``: test-test factors; U ``(*b, p*, p)``, V ``(*b, q*, q)``;
        W ``(*b, p, q)``.
    """

    def __init__(self, T1, T2, U, V, W):
        self.T1, self.T2, self.U, self.V, self.W = T1, T2, U, V, W
        batch = broadcast_shapes(T1.shape[:-2], T2.shape[:-2], U.shape[:-2], V.shape[:-2], W.shape[:-2])
        N = T1.shape[-1] * T2.shape[-1]
        self.shape = torch.Size([*batch, N, N])
        self.dtype, self.device = U.dtype, U.device

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)
        prior = kron_vectors([self.T1.diagonal(dim1=-2, dim2=-1), self.T2.diagonal(dim1=-2, dim2=-1)], self.batch_shape)
        explained = (self.U**2) @ self.W @ (self.V**2).mT  # (*b, p*, q*)
        return prior - explained.reshape(*explained.shape[:-2], -1)

    def task_blocks(self, n: int, t: int, interleaved: bool) -> torch.Tensor:
        """Each test point's ``t × t`` block, ``(*batch, n, t, t)``, without the whole matrix."""
        if interleaved:  # factors (points, tasks): block j = T1[j, j] T2 − V diag((U∘U) W)_j Vᵀ
            M = (self.U**2) @ self.W  # (*b, n, q)
            explained = torch.einsum("...jc,...ac,...bc->...jab", M, self.V, self.V)
            return self.T1.diagonal(dim1=-2, dim2=-1)[..., :, None, None] * self.T2.unsqueeze(-3) - explained
        M = (self.V**2) @ self.W.mT  # factors (tasks, points): (*b, n, p)
        explained = torch.einsum("...jk,...ak,...bk->...jab", M, self.U, self.U)
        return self.T2.diagonal(dim1=-2, dim2=-1)[..., :, None, None] * self.T1.unsqueeze(-3) - explained

    def _dense(self):
        R = self.U.unsqueeze(-2).unsqueeze(-1) * self.V.unsqueeze(-2).unsqueeze(-4)  # (*b, p*, q*, p, q)
        R = R * self.W.sqrt().unsqueeze(-3).unsqueeze(-3)
        R = R.reshape(*R.shape[:-4], self.shape[-1], -1)
        prior = KroneckerProductOperator(DenseOperator(self.T1), DenseOperator(self.T2)).to_dense()
        return prior - R @ R.mT

    def _matmul(self, rhs):
        sizes_t = [self.T1.shape[-1], self.T2.shape[-1]]
        sizes = [self.U.shape[-1], self.V.shape[-1]]
        out = kron_apply([self.T1.__matmul__, self.T2.__matmul__], sizes_t, sizes_t, rhs, self.batch_shape)
        w = kron_apply([self.U.mT.__matmul__, self.V.mT.__matmul__], sizes_t, sizes, rhs, self.batch_shape)
        w = w * self.W.reshape(*self.W.shape[:-2], -1, 1)
        return out - kron_apply([self.U.__matmul__, self.V.__matmul__], sizes, sizes_t, w, self.batch_shape)

    def _tensors(self):
        return [self.T1, self.T2, self.U, self.V, self.W]

    def _map(self, fn):
        return KroneckerPosteriorCovariance(*(fn(x) for x in self._tensors()))


class MultitaskExactPosterior:
    """Cached factorisation of a multitask GP's noisy training covariance (see the module docstring).

    Args:
        prior: the prior ``MultitaskMultivariateNormal`` at the training inputs ``(*batch, n, t)``.
        noisy: the likelihood's marginal of ``prior`` (noise added).
        train_targets: ``(*batch, n, t)``.
    """

    def __init__(self, prior: MultitaskMultivariateNormal, noisy: MultitaskMultivariateNormal, train_targets):
        self.interleaved = prior._interleaved
        self.n, self.t = prior.event_shape
        op = noisy.lazy_covariance_matrix
        r = flatten_tasks(train_targets - prior.mean, self.interleaved).unsqueeze(-1)  # (*batch, nt, 1)
        self.observed = None
        missing = torch.isnan(train_targets)
        if bool(missing.any()) and masking_on():
            # NaN entries are missing observations: condition on the observed entries only (dense path;
            # see torchgp.models.missing_data for the decoupled covariance)
            self.observed = flatten_tasks(~missing, self.interleaved)  # (*batch, nt)
            op = DenseOperator(decouple_missing(op, self.observed.expand(*op.shape[:-1])))
            r = torch.where(self.observed.unsqueeze(-1), r, 0.0)
        self.parts = kronecker_sum(op) if self.observed is None else None
        self.eig = self.blocks_L = self.factor = None
        if self.parts is not None:
            self.kind = "kronecker"
            self.eig = KroneckerEig(self.parts)
            p, q = self.parts.sizes
            self.alpha = self.eig.solve(r).reshape(*r.shape[:-2], p, q)  # Α, vec(Α) = A⁻¹ r
        elif _task_blocks_type(op, self.interleaved) is not None and self.observed is None:
            self.kind = "blocks"
            self.blocks_type = _task_blocks_type(op, self.interleaved)
            blocks = _dense(op.base)  # (*batch, t, n, n)
            self.blocks_L = psd_safe_cholesky(blocks)
            R = unflatten_tasks(r.squeeze(-1), self.n, self.t, self.interleaved).mT.unsqueeze(-1)  # (*batch, t, n, 1)
            self.alpha = torch.cholesky_solve(R, self.blocks_L)  # (*batch, t, n, 1)
        else:
            self.kind = "dense"
            self.factor = factorize(op)
            self.alpha = self.factor.solve(r)  # (*batch, nt, 1)

    def predict(self, full: MultitaskMultivariateNormal, n_test: int) -> MultitaskMultivariateNormal:
        """The posterior at the test points, from the prior ``full`` over ``n`` training then ``n_test`` test points."""
        n, t = self.n, self.t
        mean_full = full.mean  # (*batch, n + n*, t)
        test_mean = mean_full[..., n:, :]
        C = full.lazy_covariance_matrix
        if self.kind == "kronecker":
            return self._predict_kronecker(C, test_mean, n_test)
        if self.kind == "blocks":
            return self._predict_blocks(C, test_mean, n_test)
        N = n + n_test
        rows = torch.arange(N * t, device=test_mean.device)
        grid = unflatten_tasks(rows, N, t, self.interleaved)  # (N, t): the row of (point, task)
        tr = flatten_tasks(grid[:n], self.interleaved)
        te = flatten_tasks(grid[n:], self.interleaved)
        dense = C.to_dense()
        K_sx = dense[..., te[:, None], tr[None, :]]
        if self.observed is not None:  # the missing training entries carry no information
            K_sx = K_sx * self.observed.unsqueeze(-2).to(K_sx.dtype)
        K_ss = dense[..., te[:, None], te[None, :]]
        mean = flatten_tasks(test_mean, self.interleaved) + (K_sx @ self.alpha).squeeze(-1)
        cov = K_ss - K_sx @ self.factor.solve(K_sx.mT)
        return MultitaskMultivariateNormal(
            unflatten_tasks(mean, n_test, t, self.interleaved), DenseOperator(cov), interleaved=self.interleaved
        )

    def _predict_kronecker(self, C, test_mean, n_test):
        n = self.n
        if not (isinstance(C, KroneckerProductOperator) and len(C.factors) == 2):
            raise ModelTypeError(
                "The multitask model's covariance at new inputs is not the Kronecker product it had at the training "
                f"inputs (got {type(C).__name__}); build forward's covariance the same way for any inputs."
            )
        d = 0 if self.interleaved else 1  # the factor over points
        G = list(C.factors)
        cross = [G[i][..., n:, :n] if i == d else G[i] for i in range(2)]
        test = [G[i][..., n:, n:] if i == d else G[i] for i in range(2)]
        C1, C2 = (_dense(x) for x in cross)
        T1, T2 = (_dense(x) for x in test)
        eig = self.eig
        flat_mean = (C1 @ self.alpha @ C2.mT).reshape(*broadcast_shapes(C1.shape[:-2], self.alpha.shape[:-2]), -1)
        mean = flatten_tasks(test_mean, self.interleaved) + flat_mean
        cov = KroneckerPosteriorCovariance(T1, T2, C1 @ eig.P1, C2 @ eig.P2, eig.W)
        return MultitaskMultivariateNormal(
            unflatten_tasks(mean, n_test, self.t, self.interleaved), cov, interleaved=self.interleaved
        )

    def _predict_blocks(self, C, test_mean, n_test):
        n = self.n
        if _task_blocks_type(C, self.interleaved) is not self.blocks_type:
            raise ModelTypeError(
                f"The multitask model's covariance at new inputs is {type(C).__name__}, not {self.blocks_type.__name__} "
                "(independent tasks) as at the training inputs."
            )
        base = C.base  # (*batch, t, N, N)
        K_sx = _dense(base[..., n:, :n])
        K_ss = _dense(base[..., n:, n:])
        mean = test_mean + (K_sx @ self.alpha).squeeze(-1).mT  # (*batch, n*, t)
        V = torch.linalg.solve_triangular(self.blocks_L, K_sx.mT, upper=False)
        cov = self.blocks_type(DenseOperator(K_ss - V.mT @ V))
        return MultitaskMultivariateNormal(mean, cov, interleaved=self.interleaved)

    def detach(self) -> MultitaskExactPosterior:
        new = object.__new__(MultitaskExactPosterior)
        new.__dict__.update(self.__dict__)
        new.alpha = self.alpha.detach()
        if self.blocks_L is not None:
            new.blocks_L = self.blocks_L.detach()
        return new


def _task_blocks_type(op, interleaved: bool):
    """The operator type of independent tasks' covariance in ``op``'s row order (blocks ``op.base (*batch, t, n, n)``):
    :class:`BlockInterleavedOperator` (interleaved) or :class:`BlockDiagOperator` (task-major), else None."""
    kind = BlockInterleavedOperator if interleaved else BlockDiagOperator
    return kind if isinstance(op, kind) else None


def cached_multitask_posterior(model, **kwargs) -> MultitaskExactPosterior:
    """The model's :class:`MultitaskExactPosterior` at its training data: the cached one if the model's state is
    unchanged, else computed and cached (keyed on the state like the single-output posterior, never stale)."""
    key = model._state_key()
    cache = getattr(model, "_cache", None)
    if cache is not None and cache[0] == key and isinstance(cache[2], MultitaskExactPosterior):
        return cache[2]
    prior = model._prior(*model.train_inputs, **kwargs)
    if not isinstance(prior, MultitaskMultivariateNormal):
        raise ModelTypeError(
            f"{type(model).__name__}.forward must return a MultitaskMultivariateNormal for (n, t) targets; got "
            f"{type(prior).__name__}."
        )
    noisy = model.likelihood.marginal(prior, *model.train_inputs)
    detach = settings.detach_test_caches.on() or not torch.is_grad_enabled()
    with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
        post = MultitaskExactPosterior(prior, noisy, model.train_targets)
    if detach:
        post = post.detach()
    model._cache = (key, None, post)
    return post


def multitask_posterior_at(model, inputs, **kwargs) -> MultitaskMultivariateNormal:
    """Eval-mode ``model(X*)`` for an ExactGP whose forward returns a ``MultitaskMultivariateNormal``.

    Args:
        model: the ExactGP (training targets ``(*batch, n, t)``).
        inputs: tuple of test inputs ``(*batch, n*, d)``.

    Returns:
        The posterior ``MultitaskMultivariateNormal`` ``(*batch, n*, t)``. The cached factor is keyed on the model's
        state like the single-output posterior (never stale).
    """
    if model.train_inputs is None:
        raise InputError("Cannot predict: the model has no training data. Give it data with set_train_data(X, y).")
    post = cached_multitask_posterior(model, **kwargs)
    train = model.train_inputs
    batch = broadcast_shapes(*(x.shape[:-2] for x in (*train, *inputs)))
    full_inputs = [
        torch.cat([a.expand(*batch, *a.shape[-2:]), b.expand(*batch, *b.shape[-2:])], dim=-2)
        for a, b in zip(train, inputs)
    ]
    full = model._prior(*full_inputs, **kwargs)
    return post.predict(full, inputs[0].shape[-2])


def multitask_fantasy_model(model, inputs, targets, **kwargs):
    """A copy of a multitask ExactGP conditioned also on ``targets (*f, q, t)`` at ``inputs (q, d)`` or ``(*f, q, d)``.

    A leading fantasy batch ``*f`` in ``targets`` gives a batch of models (GPyTorch's semantics). For an unbatched
    Kronecker model (a ``MultitaskKernel`` with a ``MultitaskGaussianLikelihood``) or batch-independent outputs,
    and new inputs without a batch of their own, the copy's cached posterior is the block update of
    :mod:`torchgp.models.multitask_fantasy` (no new eigendecomposition or factorisation of the old points; the
    fantasy batch shares it); any other model gets its factor rebuilt from all ``n + q`` points on its first
    prediction. Either way it is exact.

    Returns:
        The new model, training data ``(*f, n + q, d)`` and ``(*f, n + q, t)``.
    """
    import copy

    inputs = (inputs,) if torch.is_tensor(inputs) else tuple(inputs)
    inputs = tuple(x.unsqueeze(-1) if x.dim() == 1 else x for x in inputs)
    train_x, train_y = model.train_inputs, model.train_targets
    t = train_y.shape[-1]
    if targets.dim() < 2 or targets.shape[-1] != t or targets.shape[-2] != inputs[0].shape[-2]:
        raise InputError(
            f"Fantasy targets must have shape (*fantasies, q, {t}) with q = {inputs[0].shape[-2]} new inputs; got "
            f"{tuple(targets.shape)}."
        )
    batch = broadcast_shapes(train_y.shape[:-2], targets.shape[:-2], *(x.shape[:-2] for x in inputs))
    new_x = tuple(
        torch.cat([a.expand(*batch, *a.shape[-2:]), b.expand(*batch, *b.shape[-2:]).to(a.dtype)], -2)
        for a, b in zip(train_x, inputs)
    )
    new_y = torch.cat([train_y.expand(*batch, *train_y.shape[-2:]), targets.expand(*batch, *targets.shape[-2:])], -2)
    post_new = _kronecker_fantasy(model, inputs, targets, **kwargs)
    new = copy.deepcopy(model, memo={id(getattr(model, "_cache", None)): None})
    new._cache = None
    new.set_train_data(new_x, new_y, strict=False)
    if post_new is not None:
        new._cache = (new._state_key(), None, post_new)
    return new


def _kronecker_fantasy(model, inputs, targets, **kwargs):
    """The block-updated posterior (:mod:`torchgp.models.multitask_fantasy`) where it applies, else None."""
    from torchgp.models.multitask_fantasy import KroneckerFantasyPosterior, blocks_fantasy_posterior

    unbatched = all(x.dim() == 2 for x in (*model.train_inputs, *inputs)) and model.train_targets.dim() == 2
    if not unbatched:
        return None
    post = cached_multitask_posterior(model, **kwargs)
    if post.kind not in ("kronecker", "blocks"):
        return None
    joint = tuple(torch.cat([a, b.to(a.dtype)], -2) for a, b in zip(model.train_inputs, inputs))
    detach = settings.detach_test_caches.on() or not torch.is_grad_enabled()
    with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
        full = model._prior(*joint, **kwargs)
        prior_new = model._prior(*inputs, **kwargs)
        noisy_new = model.likelihood.marginal(prior_new, *inputs)
        targets = targets.to(prior_new.mean.dtype)
        if post.kind == "kronecker":
            r_new = flatten_tasks(targets - prior_new.mean, post.interleaved)
            new_post = KroneckerFantasyPosterior.update(post, full, noisy_new, r_new)
        else:
            y = model.train_targets
            y_full = torch.cat([y.expand(*targets.shape[:-2], *y.shape), targets], -2)
            new_post = blocks_fantasy_posterior(post, full, noisy_new, y_full - full.mean)
    if new_post is None:
        return None
    return new_post.detach() if detach else new_post


def integer_inputs(x):
    """Integer training inputs (task indices of a Hadamard model) as ``(*batch, n, 1)``, or None for other tensors.

    Integer tensors are valid inputs of kernels over discrete values (``IndexKernel``); they are not converted.
    """
    if not torch.is_tensor(x) or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        return None
    x = x.unsqueeze(-1) if x.dim() == 1 else x
    if x.dim() < 2 or x.shape[-2] == 0:
        raise InputError(f"Integer training inputs must have shape (*batch, n, 1) with n ≥ 1; got {tuple(x.shape)}.")
    return x
