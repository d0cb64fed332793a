r"""Variational nearest-neighbour GP (VNNGP; Wu, Pleiss & Cunningham 2022).

The inducing points are the ``M`` training inputs ``Z`` themselves, in a fixed order. The prior over
``u = f(Z)`` is replaced by its Vecchia approximation, each ``u_j`` conditioned on its ``k`` nearest
*preceding* neighbours ``n(j)`` (the first ``k`` points jointly):

.. math:: p(u) \approx N(u_{1:k}; \mu_{1:k}, K_{1:k}) \prod_{j > k} N(u_j;\ \mu_j + b_j^\top(u_{n(j)} - \mu_{n(j)}),\ F_j),
          \quad b_j = K_{nn}^{-1} k_{nj},\quad F_j = k_{jj} - k_{jn} K_{nn}^{-1} k_{nj}

and ``q(u) = ∏ N(m_j, s_j²)`` is mean-field. The KL term is a sum over points (paper, App. A):

.. math:: \mathrm{KL}_j = \tfrac12\Big[\log F_j - \log s_j^2 - 1
          + \frac{(m_j - \mu_j - b_j^\top(m_{n(j)} - \mu_{n(j)}))^2 + s_j^2 + \sum_l b_{jl}^2 s_{n(j)_l}^2}{F_j}\Big],

so one minibatch of ``b`` points costs ``O(b k³)``. In training, ``q(f(x_i)) = N(m_i, s_i²)`` for a
training input ``x_i = z_i``; at test points, ``q(f(x))`` conditions on the ``k`` nearest inducing
values (Hensman et al. 2013, eq. 7, with ``Z`` the neighbours). ``K_nn`` and ``F_j`` carry ``jitter_val``.
"""

from __future__ import annotations

import torch

from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError, ModelTypeError, ShapeError
from torchgp.linalg.operators import DiagOperator
from torchgp.utils.nearest_neighbors import NNUtil
from torchgp.variational.mean_field_variational_distribution import MeanFieldVariationalDistribution
from torchgp.variational.variational_strategy import UnwhitenedVariationalStrategy

__all__ = ["NNVariationalStrategy"]


class NNVariationalStrategy(UnwhitenedVariationalStrategy):
    r"""VNNGP: inducing points at every training input, each with its ``k`` nearest preceding neighbours.

    Args:
        model: the :class:`~torchgp.models.ApproximateGP`.
        inducing_points: ``Z`` ``(M, d)``, usually all training inputs (kept fixed, a buffer).
        variational_distribution: a :class:`MeanFieldVariationalDistribution` over ``M`` values.
        k: number of neighbours (``1 ≤ k < M``).
        training_batch_size: minibatch size ``b`` of the stochastic KL (default ``M``: the full KL).
        jitter_val: jitter on the neighbour covariances and on ``F_j`` (default 1e-3, as GPyTorch).
        compute_full_kl: compute the exact Vecchia KL over all ``M`` points at every step instead of
            the unbiased minibatch estimate.

    Shapes:
        train mode: ``strategy(x (b, d))`` with ``x`` rows of ``Z`` → ``MultivariateNormal`` ``(b)``
        (``x=None`` takes the next minibatch of ``Z``); eval mode: ``x (*batch, t, d)`` → ``(*batch, t)``.

    Stochastic KL: the points ``k..M-1`` are shuffled into minibatches of ``b`` after a first batch of
    the first ``k`` points; each call to the strategy in train mode draws the next batch ``J`` and the
    step's KL is ``(M/|J|) Σ_{j∈J} KL_j`` (the first batch: ``(M/k) KL(q(u_{1:k}) ‖ p(u_{1:k}))``).
    """

    def __init__(
        self,
        model,
        inducing_points,
        variational_distribution,
        k,
        training_batch_size=None,
        jitter_val=1e-3,
        compute_full_kl=False,
    ):
        if not isinstance(variational_distribution, MeanFieldVariationalDistribution):
            raise ModelTypeError(
                "NNVariationalStrategy needs a MeanFieldVariationalDistribution(M); got "
                f"{type(variational_distribution).__name__}."
            )
        Z = torch.as_tensor(inducing_points)
        if Z.dim() == 1:
            Z = Z.unsqueeze(-1)
        if Z.dim() != 2:
            raise ShapeError(
                f"NNVariationalStrategy takes inducing_points of shape (M, d); got {tuple(Z.shape)} "
                "(batched inducing points are not supported)."
            )
        super().__init__(model, Z, variational_distribution, learn_inducing_locations=False, jitter_val=jitter_val)
        self.M, self.D = Z.shape
        self.k = int(k)
        if not 1 <= self.k < self.M:
            raise InputError(f"NNVariationalStrategy: k must be in [1, M - 1] = [1, {self.M - 1}]; got k = {k}.")
        self.training_batch_size = self.M if training_batch_size is None else int(training_batch_size)
        if not 1 <= self.training_batch_size <= self.M:
            raise InputError(f"training_batch_size must be in [1, M = {self.M}]; got {training_batch_size}.")
        self.compute_full_kl = bool(compute_full_kl)
        self.nn_util = NNUtil(self.k, self.D, device=Z.device)
        self._compute_nn()
        self._kl_memo = None
        self._set_training_iterator()

    # ------------------------------------------------------------------ neighbour structure
    def _compute_nn(self) -> NNVariationalStrategy:
        """(Re)build the neighbour search over ``Z`` and the sequential sets ``n(j)`` ``(M - k, k)``."""
        Z = self.inducing_points.detach()
        self.nn_util.set_nn_idx(Z)
        self.nn_xinduce_idx = self.nn_util.build_sequential_nn_idx(Z)
        return self

    def _apply(self, fn, *args, **kwargs):
        # .to(device) / .double(): the neighbour search and the minibatch indices follow the inducing points
        out = super()._apply(fn, *args, **kwargs)
        self.nn_util.to(self.inducing_points.device)
        self._compute_nn()
        self._training_indices_iterator = tuple(
            i.to(self.inducing_points.device) for i in self._training_indices_iterator
        )
        return out

    def _set_training_iterator(self) -> None:
        dev = self.inducing_points.device
        self._training_indices_iter = 0
        if self.training_batch_size == self.M:
            self._training_indices_iterator = (torch.arange(self.M, device=dev),)
        else:
            rest = torch.randperm(self.M - self.k, device=dev) + self.k
            self._training_indices_iterator = (torch.arange(self.k, device=dev), *rest.split(self.training_batch_size))
        self._total_training_batches = len(self._training_indices_iterator)

    def _get_training_indices(self) -> torch.Tensor:
        idx = self._training_indices_iterator[self._training_indices_iter]
        self.current_training_indices = idx
        self._training_indices_iter += 1
        if self._training_indices_iter == self._total_training_batches:
            self._set_training_iterator()
        return idx

    def _q_params(self):
        """``(m (M), s² (M))`` of the mean-field ``q(u)``."""
        q = self._variational_distribution  # its parameters directly: never the M × M diagonal matrix
        return q.variational_mean, q._variational_stddev.abs().clamp_min(1e-10).pow(2)

    def _initialize(self):
        """Start ``q(u)`` at ``m = μ(Z) + mean_init_std · ε`` and every ``s_j = 0.01`` (GPyTorch's start: a
        small variational variance makes the KL term converge quickly)."""
        if int(self.variational_params_initialized):
            return
        q = self._variational_distribution
        with torch.no_grad():
            q.variational_mean.copy_(q._noisy_mean(self.prior_distribution).expand_as(q.variational_mean))
            q._variational_stddev.fill_(1e-2)
        self.variational_params_initialized.fill_(1)

    # ------------------------------------------------------------------ calling
    def __call__(self, x, prior: bool = False, **kwargs) -> MultivariateNormal:
        """``q(f(x))``: marginals of ``q(u)`` at training inputs (train mode) or kNN prediction (eval mode)."""
        if prior:
            return self.model.forward(x, **kwargs)
        self._initialize()
        if x is not None:
            x = self._check_inputs(x)
        if self.training:
            return self._train_marginals(x)
        if x is None:
            raise InputError("NNVariationalStrategy in eval mode needs test inputs x (*batch, t, d).")
        return self._predict(x, **kwargs)

    def _train_marginals(self, x):
        q_mean, q_var = self._q_params()
        if x is None:
            idx = kl_idx = self._get_training_indices()
        else:
            if x.dim() != 2:
                raise ShapeError(f"In train mode NNVariationalStrategy takes x of shape (b, d); got {tuple(x.shape)}.")
            idx = self.nn_util.find_nn_idx(x, k=1).squeeze(-1)  # the rows of Z that x consists of
            kl_idx = self._get_training_indices()
        self._kl_memo = self._kl_divergence(kl_idx)
        return MultivariateNormal(q_mean[..., idx], DiagOperator(q_var[..., idx]))

    def _predict(self, x, **kwargs):
        """``q(f(x_i)) = ∫ p(f(x_i) | u_{N(i)}) q(u_{N(i)}) du`` over the ``k`` nearest inducing points ``N(i)``."""
        batch, t = x.shape[:-2], x.shape[-2]
        xf = x.reshape(-1, self.D)
        nn_idx = self.nn_util.find_nn_idx(xf)  # (bt, k)
        Z = self.inducing_points
        pts = torch.cat([Z[nn_idx], xf.unsqueeze(-2)], -2)  # (bt, k + 1, d): neighbours, then x_i
        prior = self.model.forward(pts, **kwargs)
        mu, K = prior.mean, prior.covariance_matrix
        k = self.k
        K_nn = K[..., :k, :k] + self.jitter_val * torch.eye(k, dtype=K.dtype, device=K.device)
        k_nx, k_xx = K[..., :k, k], K[..., k, k]
        L = torch.linalg.cholesky(K_nn)
        a = torch.cholesky_solve(k_nx.unsqueeze(-1), L).squeeze(-1)  # K_nn⁻¹ k_nx (bt, k)
        q_mean, q_var = self._q_params()
        # Hensman et al. 2013, eq. 7 with S diagonal: μ_x + aᵀ(m_N - μ_N), k_xx - aᵀk_nx + Σ a² s_N².
        mean = mu[..., k] + (a * (q_mean[nn_idx] - mu[..., :k])).sum(-1)
        var = k_xx - (a * k_nx).sum(-1) + (a.pow(2) * q_var[nn_idx]).sum(-1)
        return MultivariateNormal(mean.reshape(*batch, t), DiagOperator(var.clamp_min(0).reshape(*batch, t)))

    # ------------------------------------------------------------------ KL
    def _firstk_kl(self) -> torch.Tensor:
        """``KL(N(m_{1:k}, diag s²) ‖ N(μ_{1:k}, K_{1:k} + εI))``, a scalar."""
        prior = self.model.forward(self.inducing_points[: self.k])
        q_mean, q_var = self._q_params()
        K = prior.covariance_matrix
        L = torch.linalg.cholesky(K + self.jitter_val * torch.eye(self.k, dtype=K.dtype, device=K.device))
        # KL = ½[tr(K⁻¹S) + (m-μ)ᵀK⁻¹(m-μ) - k + log|K| - log|S|]
        Linv = torch.linalg.solve_triangular(L, torch.eye(self.k, dtype=K.dtype, device=K.device), upper=False)
        r = Linv @ (q_mean[: self.k] - prior.mean).unsqueeze(-1)
        trace = (Linv.pow(2) * q_var[: self.k]).sum()
        logdet_p = 2 * L.diagonal().log().sum()
        return 0.5 * (trace + r.pow(2).sum() - self.k + logdet_p - q_var[: self.k].log().sum())

    def _points_kl(self, idx: torch.Tensor) -> torch.Tensor:
        """``Σ_{j ∈ idx} KL_j`` (module docstring) for indices ``j ≥ k``; ``O(|idx| k³)``."""
        nn = self.nn_xinduce_idx[idx - self.k]  # (b, k)
        Z = self.inducing_points
        pts = torch.cat([Z[nn], Z[idx].unsqueeze(-2)], -2)  # (b, k + 1, d)
        prior = self.model.forward(pts)
        mu, K = prior.mean, prior.covariance_matrix
        k = self.k
        K_nn = K[..., :k, :k] + self.jitter_val * torch.eye(k, dtype=K.dtype, device=K.device)
        k_nj = K[..., :k, k]
        b = torch.cholesky_solve(k_nj.unsqueeze(-1), torch.linalg.cholesky(K_nn)).squeeze(-1)  # b_j (b, k)
        F = K[..., k, k] - (b * k_nj).sum(-1) + self.jitter_val
        q_mean, q_var = self._q_params()
        resid = q_mean[idx] - mu[..., k] - (b * (q_mean[nn] - mu[..., :k])).sum(-1)
        quad = (resid.pow(2) + q_var[idx] + (b.pow(2) * q_var[nn]).sum(-1)) / F
        return 0.5 * (F.log() - q_var[idx].log() - 1 + quad).sum()

    def _full_kl(self) -> torch.Tensor:
        kl = self._firstk_kl()
        for idx in torch.arange(self.k, self.M, device=self.inducing_points.device).split(self.training_batch_size):
            kl = kl + self._points_kl(idx)
        return kl

    def _kl_divergence(self, kl_indices: torch.Tensor) -> torch.Tensor:
        if self.compute_full_kl or self._total_training_batches == 1:
            return self._full_kl()
        if kl_indices.numel() == self.k and bool((kl_indices[: self.k] < self.k).all()):
            return self._firstk_kl() * (self.M / self.k)
        return self._points_kl(kl_indices) * (self.M / kl_indices.numel())

    def kl_divergence(self) -> torch.Tensor:
        """The step's KL: the estimate from the last train-mode call, else the full Vecchia KL (scalar)."""
        memo, self._kl_memo = self._kl_memo, None
        if memo is not None:
            return memo
        self._initialize()
        return self._full_kl()

    @property
    def prior_distribution(self) -> MultivariateNormal:
        """The prior marginals ``N(μ(Z), diag(K_zz) + ε)`` ``(M)`` (they initialise ``q``; O(M) memory)."""
        prior = self._prior_at_inducing()
        var = prior.lazy_covariance_matrix.diagonal(dim1=-2, dim2=-1) + self.jitter_val
        return MultivariateNormal(prior.mean, DiagOperator(var))
