r"""Variational strategies: ``q(f(X)) = ∫ p(f(X) | u) q(u) du`` through ``m`` inducing points ``Z``.

With ``K_zz = L Lᵀ`` and ``A = L⁻¹ K_zx`` ``(m × b)`` for a minibatch ``X`` of ``b`` points:

* **whitened** (:class:`VariationalStrategy`; Hensman et al. 2015, §3; Matthews 2017): ``u = μ_z + L v``,
  ``q(v) = N(m_v, S_v)``, ``S_v = L_v L_vᵀ``, prior ``p(v) = N(0, I)``:

  .. math:: \mu_q(X) = \mu(X) + A^\top m_v,\qquad
            \Sigma_q(X) = K_{xx} + \varepsilon I - A^\top A + (L_v^\top A)^\top (L_v^\top A)

  (``ε`` the jitter on ``K_zz``, also on ``K_xx`` as in GPyTorch);

* **unwhitened** (:class:`UnwhitenedVariationalStrategy`; Hensman et al. 2013, eq. 7):
  ``q(u) = N(m, S)``, prior ``p(u) = N(μ_z, K_zz)``, and the same formulas with
  ``m_v = L⁻¹(m - μ_z)`` and ``L_v = L⁻¹ L_S``.

One step factorises ``K_zz`` once (O(m³)), inverts the triangular factor with
``torch.linalg.solve_triangular`` (O(m³)), forms ``K_zx`` once and multiplies (O(m² b)); the ``b × b`` matrix ``K_xx`` is never formed unless
the full predictive covariance is asked for (only its diagonal enters the ELBO). The whitened KL
term needs no kernel at all:

.. math:: \mathrm{KL}(N(m_v, S_v)\,\|\,N(0, I)) = \tfrac12\big[\operatorname{tr} S_v + m_v^\top m_v - m - \log|S_v|\big].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp._state import state_key
from torchgp.distributions import MultivariateNormal
from torchgp.distributions._inducing import _add_jitter, _PredictiveCovariance, _split_prior  # noqa: F401
from torchgp.distributions.kl import gaussian_kl
from torchgp.errors import ModelTypeError, ShapeError
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.module import Module
from torchgp.variational._variational_distribution import _VariationalDistribution


class _VariationalStrategy(Module):
    """Shared machinery: inducing points, the variational distribution, initialisation, checks.

    Args:
        model: the :class:`~torchgp.models.ApproximateGP` whose ``forward`` gives the prior.
        inducing_points: ``Z`` ``(*batch, m, d)`` (or ``(m,)`` for 1-D inputs).
        variational_distribution: a distribution over ``m`` values (e.g. CholeskyVariationalDistribution).
        learn_inducing_locations: train ``Z`` (a parameter) or keep it fixed (a buffer).
        jitter_val: diagonal jitter added to ``K_zz`` (default ``settings.variational_cholesky_jitter``).
    """

    _whitened = True

    def __init__(
        self, model, inducing_points, variational_distribution, learn_inducing_locations=True, jitter_val=None
    ):
        super().__init__()
        if not isinstance(variational_distribution, _VariationalDistribution):
            raise ModelTypeError(
                f"variational_distribution must be a torchgp.variational distribution (e.g. "
                f"CholeskyVariationalDistribution(m)); got {type(variational_distribution).__name__}."
            )
        Z = torch.as_tensor(inducing_points)
        if Z.dim() == 1:
            Z = Z.unsqueeze(-1)
        if Z.dim() < 2:
            raise ShapeError(f"inducing_points must have shape (*batch, m, d); got {tuple(Z.shape)}.")
        m = variational_distribution.num_inducing_points
        if Z.shape[-2] != m:
            raise ShapeError(
                f"inducing_points has m = {Z.shape[-2]} points (shape {tuple(Z.shape)}) but the variational "
                f"distribution was built for num_inducing_points = {m}; build it with "
                f"{type(variational_distribution).__name__}({Z.shape[-2]})."
            )
        Z = Z.detach().clone()
        if learn_inducing_locations:
            self.register_parameter("inducing_points", nn.Parameter(Z))
        else:
            self.register_buffer("inducing_points", Z)
        self.learn_inducing_locations = learn_inducing_locations
        self._variational_distribution = variational_distribution
        self.register_buffer("variational_params_initialized", torch.tensor(0))
        self.jitter_val = jitter_val
        object.__setattr__(self, "model", model)  # not a submodule: the model owns this strategy
        self._cache = None

    def __getstate__(self):
        # The cache is derived state (and may hold non-leaf tensors, which cannot be deep-copied).
        state = super().__getstate__()
        state["_cache"] = None
        return state

    # ------------------------------------------------------------------ helpers
    @property
    def variational_distribution(self):
        """The variational distribution ``q(u)`` (or ``q(v)`` when whitened), a MultivariateNormal ``(*batch, m)``."""
        return self._variational_distribution()

    def _jitter(self, dtype) -> float:
        return settings.variational_cholesky_jitter.value(dtype) if self.jitter_val is None else self.jitter_val

    def _chol_zz(self, K_zz: torch.Tensor, keep_dtype: bool = False) -> torch.Tensor:
        """``chol(K_zz + jitter I)`` ``(*batch, m, m)``, factorised in ``settings._linalg_dtype_cholesky``.

        As GPyTorch does, a float32 ``K_zz`` is factorised in float64 by default (``settings.linalg_dtypes``), so
        near-singular inducing covariances factorise without jitter escalation; the factor is returned in
        ``K_zz``'s dtype unless ``keep_dtype`` asks for the factorisation dtype.
        """
        eye = torch.eye(K_zz.shape[-1], dtype=K_zz.dtype, device=K_zz.device)
        A = K_zz + self._jitter(K_zz.dtype) * eye
        wide = settings._linalg_dtype_cholesky.value()
        if wide.is_floating_point and torch.finfo(wide).bits > torch.finfo(A.dtype).bits:
            L = psd_safe_cholesky(A.to(wide))
            return L if keep_dtype else L.to(K_zz.dtype)
        return psd_safe_cholesky(A)

    def _params_key(self, dtype):
        """What ``chol(K_zz)`` depends on: the model's parameters and buffers (not ``q(u)``'s), the jitter."""
        return state_key(self.model, settings=(self._jitter(dtype),), exclude=self._variational_distribution)

    def _factor(self, K_zz, mean_z, for_kl: bool):
        """``(μ_z, L, L⁻¹)`` with ``L = chol(K_zz + jitter I)``, from the cache when nothing changed.

        A cached factor that carries an autograd graph is not reused by a forward pass (the graph of
        the previous step may have been freed by ``backward``); without a graph (eval mode, no_grad,
        frozen hyperparameters) it is reused, saving the O(m³) factorisation and inversion.
        ``for_kl``: the inputs added no batch dimensions to ``K_zz``, so the KL term may reuse it.
        """
        Z = self.inducing_points
        key = self._params_key(Z.dtype)
        c = self._cache
        if c is not None and c[0] == key and c[2].shape == K_zz.shape and not c[2].requires_grad:
            self._cache = (*c[:4], for_kl)
            return c[1], c[2], c[3]
        L = self._chol_zz(K_zz, keep_dtype=True)
        # Inverting the m × m factor once (O(m³)) and multiplying is a GEMM, about twice as fast as a
        # triangular solve with b right-hand sides (b ≫ m per minibatch), and its backward is two GEMMs.
        # Both in the factorisation's dtype (float64 for a float32 model by default), then K_zz's.
        eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device)
        L_inv = torch.linalg.solve_triangular(L, eye, upper=False).to(K_zz.dtype)
        L = L.to(K_zz.dtype)
        self._cache = (key, mean_z, L, L_inv, for_kl)  # reused by kl_divergence() in the same step
        return mean_z, L, L_inv

    def _check_inputs(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        Z = self.inducing_points
        if x.shape[-1] != Z.shape[-1]:
            raise ShapeError(
                f"The inputs have d = {x.shape[-1]} features (shape {tuple(x.shape)}) but the inducing points "
                f"have d = {Z.shape[-1]} (shape {tuple(Z.shape)}). Build inducing_points with shape (m, "
                f"{x.shape[-1]}), e.g. train_x[:m].clone()."
            )
        if x.dtype != Z.dtype:
            raise ShapeError(
                f"The inputs are {x.dtype} but the inducing points are {Z.dtype}; convert the model "
                f"(model.to({x.dtype})) or the inputs."
            )
        return x

    def _prior_at_inducing(self):
        Z = self.inducing_points
        prior = self.model.forward(Z)
        if not isinstance(prior, MultivariateNormal):
            raise ModelTypeError(f"{type(self.model).__name__}.forward must return a torchgp MultivariateNormal.")
        return prior

    @property
    def prior_distribution(self) -> MultivariateNormal:
        """``p(v) = N(0, I)`` when whitened, else ``p(u) = N(μ(Z), K_zz + jitter I)``; ``(*batch, m)``."""
        raise NotImplementedError

    def _initialize(self):
        if not int(self.variational_params_initialized):
            self._variational_distribution.initialize_variational_distribution(self.prior_distribution)
            self.variational_params_initialized.fill_(1)

    # ------------------------------------------------------------------ calling
    def _joint_prior(self, x: torch.Tensor, **kwargs):
        """The prior at ``[Z; x]`` from one call of the model's ``forward``, split into its blocks.

        Returns ``(μ(Z) (*b, m), μ(x) (*b, n), K_zz (*b, m, m), K_zx (*b, m, n), diag K_xx (*b, n))`` and a closure
        giving the dense ``K_xx (*b, n, n)`` (see ``_split_prior``).
        """
        Z = self.inducing_points
        batch = broadcast_shapes(Z.shape[:-2], x.shape[:-2])
        full = torch.cat([Z.expand(*batch, *Z.shape[-2:]), x.expand(*batch, *x.shape[-2:])], -2)
        prior_full = self.model.forward(full, **kwargs)
        if not isinstance(prior_full, MultivariateNormal):
            raise ModelTypeError(
                f"{type(self.model).__name__}.forward must return a torchgp MultivariateNormal; got "
                f"{type(prior_full).__name__}."
            )
        return _split_prior(prior_full, Z.shape[-2])

    def __call__(self, x: torch.Tensor, prior: bool = False, **kwargs) -> MultivariateNormal:
        """``q(f(x))`` ``(*batch, b)`` for inputs ``x (*batch, b, d)``; the prior if ``prior=True``."""
        if prior:
            return self.model.forward(x, **kwargs)
        x = self._check_inputs(x)
        self._initialize()
        mean_z, mean_x, K_zz, K_zx, kxx_diag, kxx_dense = self._joint_prior(x, **kwargs)
        m = K_zz.shape[-1]
        if self._whitened:
            # The prior at X carries the same jitter as at Z (GPyTorch's whitened convention):
            # Σ_q(X) = K_xx + εI - AᵀA + BᵀB.
            eps = self._jitter(K_zz.dtype)
            kxx_diag, kxx_dense = kxx_diag + eps, _add_jitter(kxx_dense, eps)
        if kwargs:  # forward's keyword arguments may change the prior: no cache
            L = self._chol_zz(K_zz)
            L_inv = torch.linalg.solve_triangular(L, torch.eye(m, dtype=L.dtype, device=L.device), upper=False)
            self._cache = None
        else:
            Z_batch = self.inducing_points.shape[:-2]
            # the factor serves the KL only when the inputs add no batch dimensions to Z's
            mean_z, L, L_inv = self._factor(K_zz, mean_z, for_kl=broadcast_shapes(Z_batch, x.shape[:-2]) == Z_batch)
        A = L_inv @ K_zx  # A = L⁻¹ K_zx (*batch, m, b)
        q_mean, q_chol = self._variational_distribution.mean_and_scale_tril()
        v_mean, v_chol = self._whiten(q_mean, q_chol, mean_z, L)
        mean = mean_x + (A.mT @ v_mean.unsqueeze(-1)).squeeze(-1)
        B = v_chol.mT @ A
        return MultivariateNormal(mean, _PredictiveCovariance(kxx_diag, kxx_dense, A, B))

    def _whiten(self, q_mean, q_chol, mean_z, L):
        """Mean and factor of ``q(v)`` in the whitened coordinates."""
        raise NotImplementedError

    def kl_divergence(self) -> torch.Tensor:
        """``KL(q ‖ p)`` over the inducing values, ``(*batch)`` (``-log p(m)`` for a delta q)."""
        raise NotImplementedError

    def _cached_prior_chol(self):
        """``(μ_z, chol(K_zz + jitter I))``: the forward pass's factor when no value changed since."""
        Z = self.inducing_points
        c = self._cache
        if c is not None and c[4] and c[0] == self._params_key(Z.dtype):
            return c[1], c[2]
        prior = self._prior_at_inducing()
        return prior.mean, self._chol_zz(prior.covariance_matrix)


def _default_updated_strategy(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """A state_dict without ``updated_strategy`` (saved before the flag existed) holds whitened parameters."""
    key = prefix + "updated_strategy"
    if key not in state_dict:
        state_dict[key] = torch.tensor(True)


class VariationalStrategy(_VariationalStrategy):
    r"""Whitened SVGP strategy (Hensman et al. 2015): ``u = μ(Z) + L v``, ``p(v) = N(0, I)``.

    Args:
        model: the :class:`~torchgp.models.ApproximateGP` whose ``forward`` gives the prior.
        inducing_points: ``Z`` ``(*batch, m, d)``.
        variational_distribution: distribution over the ``m`` whitened values.
        learn_inducing_locations: train ``Z`` (default) or keep it fixed.
        jitter_val: diagonal jitter on ``K_zz`` (default ``settings.variational_cholesky_jitter``).

    Shapes:
        ``strategy(x (*batch, b, d))`` → ``MultivariateNormal`` ``(*batch, b)``.

    Raises:
        ShapeError: inducing points with a different ``d`` than the inputs, or ``m`` different from
            the variational distribution's.
    """

    _whitened = True

    def __init__(
        self, model, inducing_points, variational_distribution, learn_inducing_locations=True, jitter_val=None
    ):
        super().__init__(model, inducing_points, variational_distribution, learn_inducing_locations, jitter_val)
        # GPyTorch's flag: False in a state_dict saved with unwhitened variational parameters; the first
        # call then whitens them (u = μ_z + L v) and sets it True.
        self.register_buffer("updated_strategy", torch.tensor(True))
        self._register_load_state_dict_pre_hook(_default_updated_strategy)

    def __call__(self, x: torch.Tensor, prior: bool = False, **kwargs) -> MultivariateNormal:
        flag = getattr(self, "updated_strategy", None)  # absent in strategies pickled before the flag existed
        if not prior and flag is not None and not bool(flag):
            self._whiten_loaded_parameters()
        return super().__call__(x, prior=prior, **kwargs)

    def _whiten_loaded_parameters(self) -> None:
        """Turn ``q(u) = N(m, S)`` into ``q(v) = N(L⁻¹(m - μ_z), L⁻¹ S L⁻ᵀ)`` (``K_zz + jitter I = L Lᵀ``)."""
        with torch.no_grad():
            prior = self._prior_at_inducing()
            L = self._chol_zz(prior.covariance_matrix)
            q_mean, q_chol = self._variational_distribution.mean_and_scale_tril()
            rhs = torch.cat([(q_mean - prior.mean).unsqueeze(-1), q_chol.expand(*L.shape[:-2], *q_chol.shape[-2:])], -1)
            sol = torch.linalg.solve_triangular(L, rhs, upper=False)
            v_mean, V = sol[..., 0], sol[..., 1:]
            S_v = V @ V.mT
            whitened = MultivariateNormal(v_mean, S_v)
            whitened._chol = psd_safe_cholesky(S_v)
            noise = self._variational_distribution.mean_init_std
            self._variational_distribution.mean_init_std = 0.0
            try:
                self._variational_distribution.initialize_variational_distribution(whitened)
            finally:
                self._variational_distribution.mean_init_std = noise
            self.variational_params_initialized.fill_(1)
            self.updated_strategy.fill_(True)
        self._cache = None

    @property
    def prior_distribution(self):
        shape = self._variational_distribution.shape()
        Z = self.inducing_points
        zeros = torch.zeros(shape, dtype=Z.dtype, device=Z.device)
        eye = torch.eye(shape[-1], dtype=Z.dtype, device=Z.device).expand(*shape, shape[-1])
        p = MultivariateNormal(zeros, eye)
        p._chol = eye
        return p

    def _whiten(self, q_mean, q_chol, mean_z, L):
        return q_mean, q_chol

    def kl_divergence(self):
        self._initialize()
        v_mean, v_chol = self._variational_distribution.mean_and_scale_tril()
        m = v_mean.shape[-1]
        if self._variational_distribution.is_delta:
            return 0.5 * v_mean.pow(2).sum(-1) + 0.5 * m * math.log(2 * math.pi)
        logdet = 2 * v_chol.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)
        return 0.5 * (v_chol.pow(2).sum((-1, -2)) + v_mean.pow(2).sum(-1) - m - logdet)


class UnwhitenedVariationalStrategy(_VariationalStrategy):
    r"""Unwhitened SVGP strategy (Hensman et al. 2013): ``q(u) = N(m, S)``, ``p(u) = N(μ(Z), K_zz)``.

    Same arguments and shapes as :class:`VariationalStrategy`. The KL term needs ``chol(K_zz)``;
    it reuses the factor from the forward pass of the same step. In float32 the default jitter on
    ``K_zz`` is 1e-3 (float64: ``settings.variational_cholesky_jitter``).

    One jitter serves the forward pass, the KL term and the initialisation of ``q(u)``, so ``p(u)`` is
    the same Gaussian in all three. GPyTorch 1.15 uses ``jitter_val`` in its forward pass but
    ``K_zz + 10⁻³ I`` in its KL term and initialisation, whatever the dtype: in float64 its ELBO (and its
    initial ``S``) therefore differ from torchgp's by that jitter's effect.
    """

    _whitened = False

    def _jitter(self, dtype) -> float:
        # In float32 the unwhitened KL, tr(K_zz⁻¹S) + mᵀK_zz⁻¹m, explodes after one optimiser step when
        # K_zz is near-singular (e.g. inducing points closer than a lengthscale): 1e-3 keeps K_zz⁻¹ bounded
        # (GPyTorch's unwhitened prior uses the same amount). One value serves forward and KL alike.
        if self.jitter_val is None and dtype != torch.float64:
            return max(1e-3, settings.variational_cholesky_jitter.value(dtype))
        return super()._jitter(dtype)

    @property
    def prior_distribution(self):
        prior = self._prior_at_inducing()
        L = self._chol_zz(prior.covariance_matrix)
        p = MultivariateNormal(prior.mean, L @ L.mT)
        p._chol = L
        return p

    def _whiten(self, q_mean, q_chol, mean_z, L):
        rhs = torch.cat([(q_mean - mean_z).unsqueeze(-1), q_chol.expand(*L.shape[:-2], *q_chol.shape[-2:])], -1)
        sol = torch.linalg.solve_triangular(L, rhs, upper=False)
        return sol[..., 0], sol[..., 1:]

    def kl_divergence(self):
        self._initialize()
        q_mean, q_chol = self._variational_distribution.mean_and_scale_tril()
        mean_z, L = self._cached_prior_chol()
        if self._variational_distribution.is_delta:
            return -MultivariateNormal(mean_z, L @ L.mT).log_prob(q_mean)
        return gaussian_kl(q_mean, q_chol, mean_z, L)
