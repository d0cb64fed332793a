r"""Fantasy models: an exact GP conditioned on ``q`` extra observations, by a block Cholesky update.

With ``K̂ = K + σ²I = L Lᵀ`` cached for the ``n`` training points and new points ``X_q``,

.. math::
    \begin{pmatrix} \hat K & K_{xq} \\ K_{qx} & \hat K_{qq} \end{pmatrix}
    = \begin{pmatrix} L & 0 \\ S & L_q \end{pmatrix}\begin{pmatrix} L & 0 \\ S & L_q \end{pmatrix}^\top,
    \qquad S = K_{qx} L^{-\top},\quad L_q = \operatorname{chol}(\hat K_{qq} - S S^\top)

(Golub & Van Loan 2013, §4.2.9 block Cholesky), so the new factor costs one triangular solve with
``q`` right-hand sides, O(n²q), instead of an O((n+q)³) refactorisation. The factor depends on the
inputs only: every fantasy batch member (one per row of ``targets``' leading dimension) shares it,
and only ``α = L_new⁻ᵀ L_new⁻¹ (y − μ)`` is computed per fantasy, O((n+q)²) each.
"""

from __future__ import annotations

import copy

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError, ShapeError
from torchgp.likelihoods.gaussian import FixedNoiseGaussianLikelihood
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.linalg.operators import KernelOperator
from torchgp.models.posterior import ExactPosterior, _batched_columns
from torchgp.models.validation import check_test_inputs

__all__ = ["fantasy_model", "cholesky_append"]


def cholesky_append(L: torch.Tensor, K_xq: torch.Tensor, K_qq: torch.Tensor) -> torch.Tensor:
    r"""The Cholesky factor of ``[[L Lᵀ, K_xq], [K_qx, K_qq]]`` from ``L``, in O(n²q).

    Args:
        L: ``(*batch, n, n)`` lower factor of the old matrix.
        K_xq: ``(*batch, n, q)`` new columns; K_qq: ``(*batch, q, q)`` new block (noise included).

    Returns:
        ``(*batch, n + q, n + q)`` lower factor ``[[L, 0], [S, L_q]]`` (module docstring).
    """
    batch = broadcast_shapes(L.shape[:-2], K_xq.shape[:-2], K_qq.shape[:-2])
    n, q = L.shape[-1], K_qq.shape[-1]
    L = L.expand(*batch, n, n)
    S_t = torch.linalg.solve_triangular(L, K_xq.expand(*batch, n, q), upper=False)  # Sᵀ = L⁻¹ K_xq
    L_q = psd_safe_cholesky(K_qq - S_t.mT @ S_t)  # chol of the Schur complement K̂_qq − S Sᵀ
    # one allocation, each block written once (the O(n²) copy of L is the update's memory traffic)
    L_new = torch.empty(*batch, n + q, n + q, dtype=L.dtype, device=L.device)
    L_new[..., :n, :n] = L
    L_new[..., :n, n:] = 0
    L_new[..., n:, :n] = S_t.mT
    L_new[..., n:, n:] = L_q
    return L_new


def _cholesky_solve(rhs: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """``(L Lᵀ)⁻¹ rhs`` by two triangular solves (faster than ``cholesky_solve`` for few columns on CPU)."""
    return torch.linalg.solve_triangular(L.mT, torch.linalg.solve_triangular(L, rhs, upper=False), upper=True)


def fantasy_model(model, inputs, targets, **kwargs):
    """``model`` conditioned on extra observations ``(inputs, targets)`` (GPyTorch's ``get_fantasy_model``).

    Args:
        model: an :class:`~torchgp.models.ExactGP` with training data.
        inputs: ``(*batch, q, d)`` or ``(f, *batch, q, d)`` (or ``(q,)`` for 1-D inputs), or a tuple of them.
        targets: ``(*batch, q)`` or ``(f, *batch, q)``: a leading fantasy dimension ``f`` beyond the
            inputs' batch gives ``f`` fantasy models in one batch, sharing the new inputs.
        **kwargs: ``noise=`` ``(*batch, q)`` noise variances of the new points for a
            ``FixedNoiseGaussianLikelihood`` (appended to its ``noise``); the rest goes to the likelihood.

    Returns:
        A deep copy of ``model`` with ``n + q`` training points and batch shape
        ``broadcast(targets.shape[:-1], inputs' batch, model's batch)``, whose cached posterior is the
        block-Cholesky update of ``model``'s (Cholesky path); on the iterative path, or for a model with
        masked missing targets, the copy refactorises on its first prediction.

    Raises:
        ShapeError: ``targets`` and ``inputs`` disagree on ``q``.
        InputError: a fixed-noise likelihood without ``noise=``.
    """
    if model.train_inputs is None:
        raise ShapeError("get_fantasy_model: the model has no training data to add fantasy points to.")
    inputs = (inputs,) if torch.is_tensor(inputs) else tuple(inputs)
    train = model.train_inputs
    inputs = tuple(check_test_inputs(b, a) for a, b in zip(train, inputs))
    targets = torch.as_tensor(targets, dtype=model.train_targets.dtype, device=model.train_targets.device)
    q = inputs[0].shape[-2]
    if targets.dim() == inputs[0].dim() and targets.shape[-1] == 1 and q != 1:
        targets = targets.squeeze(-1)  # (*batch, q, 1) column targets
    if targets.dim() == 0 or targets.shape[-1] != q:
        raise ShapeError(
            f"get_fantasy_model: targets {tuple(targets.shape)} must end in q = {q}, the number of fantasy "
            f"inputs {tuple(inputs[0].shape)}: shape (*batch, {q}) or (f, *batch, {q})."
        )
    n = train[0].shape[-2]
    in_batch = broadcast_shapes(*(x.shape[:-2] for x in (*train, *inputs)))
    f_batch = broadcast_shapes(in_batch, targets.shape[:-1], model.train_targets.shape[:-1])
    noise_new = kwargs.get("noise")
    if isinstance(model.likelihood, FixedNoiseGaussianLikelihood) and noise_new is None:
        raise InputError(
            "get_fantasy_model on a model with a FixedNoiseGaussianLikelihood needs the new points' noise "
            f"variances: get_fantasy_model(inputs, targets, noise=var) with var of shape (*batch, {q})."
        )

    post = model._posterior()
    joint = [
        torch.cat([a.expand(*in_batch, *a.shape[-2:]), b.expand(*in_batch, *b.shape[-2:])], dim=-2)
        for a, b in zip(train, inputs)
    ]
    new_factor = None
    if post.use_cholesky and type(post) is ExactPosterior:
        prior = model._prior(*joint)
        mean_full, cov = prior.mean, prior.lazy_covariance_matrix
        if isinstance(cov, KernelOperator) and cov.symmetric:
            x_tr, x_q = cov.x1[..., :n, :], cov.x1[..., n:, :]
            K_xq = KernelOperator(cov.kernel, x_tr, x_q, **cov.params).to_dense()
            K_qq = KernelOperator(cov.kernel, x_q, x_q, **cov.params)
        else:
            C = cov.to_dense()
            K_xq, K_qq = C[..., :n, n:], C[..., n:, n:]
        # K̂_qq: the likelihood adds the new points' noise (per-point noise= for fixed-noise likelihoods)
        noisy_qq = model.likelihood.marginal(MultivariateNormal(mean_full[..., n:], K_qq), *inputs, **kwargs)
        L_new = cholesky_append(post.L, K_xq, noisy_qq.lazy_covariance_matrix.to_dense())
        y_full = torch.cat(
            [model.train_targets.expand(*f_batch, n), targets.expand(*f_batch, q)], -1
        )  # (f, *batch, n + q)
        r = (y_full - mean_full).unsqueeze(-1)
        alpha = _batched_columns(lambda v: _cholesky_solve(v, L_new), L_new.shape[:-2], r)  # R&W Alg. 2.1 l. 3
        new_factor = (L_new, alpha)

    # the copy does not carry the old cache (O(n²)): it gets the updated one below
    new = copy.deepcopy(model, memo={id(model._cache): None})
    x_full = tuple(x.expand(*f_batch, *x.shape[-2:]) for x in joint)
    y_full = torch.cat([model.train_targets.expand(*f_batch, n), targets.expand(*f_batch, q)], -1)
    if isinstance(new.likelihood, FixedNoiseGaussianLikelihood):
        old = new.likelihood.noise
        noise_new = torch.as_tensor(noise_new, dtype=old.dtype, device=old.device)
        nb = broadcast_shapes(old.shape[:-1], noise_new.shape[:-1])
        new.likelihood.noise = torch.cat([old.expand(*nb, n), noise_new.expand(*nb, q)], -1)
    new.set_train_data(x_full, y_full, strict=False)
    if new_factor is not None:
        post_new = ExactPosterior.from_factor(x_full[0], *new_factor)
        if settings.detach_test_caches.on() or not torch.is_grad_enabled():
            post_new = post_new.detach()
        new._cache = (new._state_key(), None, post_new)
    return new
