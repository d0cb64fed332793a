r"""``ExactGP``: GP regression with a Gaussian likelihood, solved exactly.

Write ``forward(x)`` returning the prior ``MultivariateNormal(mean(x), kernel(x))``. In train
mode ``model(X)`` is that prior at the training inputs; in eval mode ``model(X*)`` is the
posterior at ``X*`` (R&W 2006, Alg. 2.1), computed from an :class:`ExactPosterior` that is rebuilt
whenever a parameter, buffer or the training data changes, so predictions are never stale.
``model.posterior(X*)`` returns the same distribution in either mode.

Prediction runs in blocks of test points (``settings.prediction_block_size``), so any number of
them takes bounded memory; variances are exact, or by LOVE under ``settings.fast_pred_var``
(:mod:`torchgp.models.love`). ``get_fantasy_model`` updates the cached factor by a block Cholesky
update (:mod:`torchgp.models.fantasy`). Forward (pre-)hooks run around ``model(X)`` in both modes.

A :class:`~torchgp.utils.warnings.GPInputWarning` says when an input is almost surely a mistake
(:mod:`torchgp.models._diagnostics`): the first training-mode call on new training inputs whose spread
is more than 10³ times off a kernel's lengthscale, NaN/inf test rows, and (under ``settings.debug``, as
in GPyTorch) an eval-mode call on the training inputs.
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp._shapes import all_finite, broadcast_shapes
from torchgp._state import state_key
from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError, ModelTypeError, NonFiniteError, NotPSDError
from torchgp.likelihoods.gaussian import _GaussianLikelihoodBase
from torchgp.linalg.operators import AddedDiagOperator
from torchgp.models._diagnostics import (
    InputScaleWatch,
    input_key,
    warn_eval_on_train_inputs,
    warn_nonfinite_test_rows,
)
from torchgp.models.gp import GP, call_with_hooks
from torchgp.models.missing_data import exact_posterior
from torchgp.models.multitask_posterior import integer_inputs, multitask_fantasy_model, multitask_posterior_at
from torchgp.models.posterior import ExactPosterior, PosteriorMultivariateNormal, joint_blocks
from torchgp.models.validation import check_test_inputs, check_train_inputs, check_train_targets, nonfinite_rows


class ExactGP(GP):
    """Exact GP regression model (GPyTorch's interface).

    Args:
        train_inputs: ``(*batch, n, d)`` (or ``(n,)``), or a tuple of such tensors.
        train_targets: ``(*batch, n)``; ``(*batch, n, 1)`` is accepted for one output; ``(*batch, n, t)`` with a
            multitask likelihood (``MultitaskGaussianLikelihood``), whose model returns a
            ``MultitaskMultivariateNormal`` (:mod:`torchgp.models.multitask_posterior` predicts).
        likelihood: a Gaussian likelihood (``GaussianLikelihood``, ``FixedNoiseGaussianLikelihood``, ...).

    Shapes:
        train mode: ``model(X)`` → prior ``MultivariateNormal`` ``(*batch, n)``;
        eval mode: ``model(X*)`` with ``X* (*batch, t, d)`` → posterior ``(*batch, t)``;
        ``model.posterior(X*)`` → posterior ``(*batch, t)`` in either mode.
    """

    @property
    def _multi_output(self) -> bool:
        """Whether the targets are ``(*batch, n, t)``: the likelihood is a multitask one."""
        return bool(getattr(self._modules.get("likelihood"), "_multi_output", False))

    def __init__(self, train_inputs, train_targets, likelihood):
        if not isinstance(likelihood, _GaussianLikelihoodBase):
            raise ModelTypeError(
                f"ExactGP needs a Gaussian likelihood (GaussianLikelihood, FixedNoiseGaussianLikelihood); got "
                f"{type(likelihood).__name__}. For non-Gaussian likelihoods use an ApproximateGP with "
                "VariationalELBO."
            )
        super().__init__()
        self.likelihood = likelihood
        self.train_inputs = None
        self.train_targets = None
        self._cache = None
        if train_inputs is not None:
            self.set_train_data(train_inputs, train_targets, strict=False)

    # ------------------------------------------------------------------ data
    def set_train_data(self, inputs=None, targets=None, strict: bool = True) -> None:
        """Replace the training data (the cached posterior is dropped).

        Args:
            inputs: ``(*batch, n, d)`` tensor or tuple of tensors; None keeps the current ones.
            targets: ``(*batch, n)``; None keeps the current ones.
            strict: if True, shapes, dtypes and devices must equal the current ones.
        """
        if inputs is not None:
            inputs = (inputs,) if torch.is_tensor(inputs) else tuple(inputs)
            # integer inputs are task indices (Hadamard models); the others must be finite floats
            inputs = tuple(
                integer_inputs(x) if integer_inputs(x) is not None else check_train_inputs(x, "train_inputs")
                for x in inputs
            )
            if strict and self.train_inputs is not None:
                for old, new in zip(self.train_inputs, inputs):
                    if old.shape != new.shape or old.dtype != new.dtype or old.device != new.device:
                        raise InputError(
                            f"set_train_data(strict=True): new inputs {tuple(new.shape)} {new.dtype} differ from "
                            f"the current {tuple(old.shape)} {old.dtype}; pass strict=False to change them."
                        )
        else:
            inputs = self.train_inputs
        if targets is not None:
            if inputs is None:
                raise InputError("set_train_data: targets given but the model has no training inputs.")
            targets = check_train_targets(targets, inputs[0], self._multi_output)
            if strict and self.train_targets is not None and targets.shape != self.train_targets.shape:
                raise InputError(
                    f"set_train_data(strict=True): new targets {tuple(targets.shape)} differ in shape from the "
                    f"current {tuple(self.train_targets.shape)}; pass strict=False."
                )
        elif (
            inputs is not None
            and self.train_targets is not None
            and inputs[0].shape[-2] != self.train_targets.shape[-2 if self._multi_output else -1]
        ):
            raise InputError("set_train_data: the new inputs have a different n; pass the matching targets too.")
        if inputs is not None and targets is None and self.train_targets is None:
            raise InputError("ExactGP needs train_targets with train_inputs (got None).")
        self.train_inputs = inputs
        if targets is not None:
            self.train_targets = targets
        self._cache = None

    def _apply(self, fn, *args, **kwargs):
        """Move/convert the training data along with the parameters (``.double()``, ``.to(device)``)."""
        if self.train_inputs is not None:
            self.train_inputs = tuple(fn(x) for x in self.train_inputs)
            self.train_targets = fn(self.train_targets)
        self._cache = None
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------ calling
    def _prior(self, *inputs) -> MultivariateNormal:
        out = self.forward(*inputs)
        if not isinstance(out, MultivariateNormal):
            raise ModelTypeError(
                f"{type(self).__name__}.forward must return a torchgp MultivariateNormal; got {type(out).__name__}."
            )
        return out

    def __call__(self, *args, **kwargs):
        """Train mode: the prior at the training inputs; eval mode: the posterior at ``args``.

        Forward pre-hooks and forward hooks registered on the model run around this call and see
        ``args`` (the inputs given) and the returned distribution, in both modes.
        """
        return call_with_hooks(self, self._dispatch, args, kwargs)

    def _dispatch(self, *args, **kwargs):
        if not args:
            raise InputError("Call the model on inputs: model(X) with X of shape (*batch, n, d).")
        train_x = None if self.train_inputs is None else self.train_inputs[0]
        if self.training:
            if self.train_inputs is None:
                raise InputError("The model has no training data; pass it to the constructor or set_train_data().")
            # the training inputs themselves were checked by set_train_data (the call every training step makes)
            inputs = tuple(
                a if a is t and a.dim() > 1 else check_test_inputs(a, t) for a, t in zip(args, self.train_inputs)
            )
            if settings.debug.on() and not all(
                a is t or (a.shape == t.shape and torch.equal(a, t)) for a, t in zip(inputs, self.train_inputs)
            ):
                raise InputError(
                    "In train mode the model must be called on its training inputs (it returns the prior there). "
                    "Call model.eval() to predict at new inputs, or model.set_train_data() to change the data."
                )
            watch = InputScaleWatch.start(self, input_key(self.train_inputs))
            if watch is None:
                return self._prior(*self.train_inputs, **kwargs)
            with watch:  # first training-mode call on these inputs: their scale against the lengthscales
                return self._prior(*self.train_inputs, **kwargs)
        inputs = tuple(check_test_inputs(a, train_x) for a in args)
        if settings.prior_mode.on():
            return self._prior(*inputs, **kwargs)
        if settings.debug.on() and self.train_inputs is not None:
            warn_eval_on_train_inputs(inputs, self.train_inputs, stacklevel=5)  # GPyTorch's GPInputWarning
        warn_nonfinite_test_rows(inputs, stacklevel=5)
        return self._posterior_at(inputs, **kwargs)

    def posterior(self, X, observation_noise=False, **kwargs) -> MultivariateNormal:
        r"""The posterior distribution at ``X`` (R&W 2006, Alg. 2.1), in train or eval mode.

        ``model.posterior(X)`` is what eval-mode ``model(X)`` returns (same cached factor, same path);
        with ``observation_noise=True`` it is the noisy predictive ``likelihood(model(X), X)``.

        .. math:: f_* \mid y \sim N\big(\mu_* + K_{*x}\alpha,\; K_{**} - K_{*x}(K + \sigma^2 I)^{-1}K_{x*}\big)

        Args:
            X: ``(*batch, t, d)`` test inputs (or a tuple of such tensors for multi-input models).
            observation_noise: False (latent ``f*``), True (add the likelihood's noise at ``X``; pass
                ``noise=`` for a ``FixedNoiseGaussianLikelihood``), or a tensor ``(*batch, t)`` of noise
                variances to add.
            **kwargs: passed to ``forward`` (and to the likelihood when it adds noise).

        Returns:
            A ``MultivariateNormal`` ``(*batch, t)`` whose covariance is lazy: its variances are computed
            in blocks of test points (``settings.prediction_block_size``), by LOVE under
            ``settings.fast_pred_var``.

        Example:
            >>> post = model.posterior(X_test)                          # doctest: +SKIP
            >>> mean, var = post.mean, post.variance                   # doctest: +SKIP
        """
        inputs = (X,) if torch.is_tensor(X) else tuple(X)
        train_x = None if self.train_inputs is None else self.train_inputs[0]
        inputs = tuple(check_test_inputs(a, train_x) for a in inputs)
        lik_kwargs = {k: kwargs.pop(k) for k in ("noise",) if k in kwargs}
        warn_nonfinite_test_rows(inputs, stacklevel=3)
        post = self._posterior_at(inputs, **kwargs)
        if observation_noise is False or observation_noise is None:
            return post
        if torch.is_tensor(observation_noise):
            noise = observation_noise.to(post.mean.dtype)
            return PosteriorMultivariateNormal(post.mean, AddedDiagOperator(post.lazy_covariance_matrix, noise))
        return self.likelihood(post, *inputs, **lik_kwargs)

    # ------------------------------------------------------------------ posterior
    def _state_key(self):
        """What the posterior depends on: parameter/buffer values, the training data, grad mode, settings."""
        # Values, not versions: ``param.data.fill_`` and ``train_y.data[...] = v`` bump no version counter.
        # The training data is O(n·d), negligible next to the O(n²) prediction it guards.
        # A detached cache serves grad and no-grad calls alike: the grad mode counts only without detaching.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not settings.detach_test_caches.on()):
            return state_key(
                self,
                *self.train_inputs,
                self.train_targets,
                settings=(
                    settings.max_cholesky_size.value(),
                    settings.detach_test_caches.on(),
                    settings.observation_nan_policy.value(),  # a masked posterior differs from a refused one
                    settings.sgpr_diagonal_correction.on(),  # InducingPointKernel's test block depends on it
                ),
            )

    def _posterior_at(self, inputs, **kwargs) -> MultivariateNormal:
        if self.train_inputs is None:
            raise InputError(
                "Cannot predict: the model has no training data. Give it data with set_train_data(X, y), or use "
                "`with torchgp.settings.prior_mode():` to get the prior."
            )
        if self._multi_output:  # (n, t) targets: the Kronecker / block / dense multitask posterior
            return multitask_posterior_at(self, inputs, **kwargs)
        # The posterior (L, α) depends on the training data only: built once from the prior at the
        # training inputs, with the training batch shape, and broadcast against any test batch.
        posterior = self._posterior(**kwargs)
        train = self.train_inputs
        n = train[0].shape[-2]
        batch = broadcast_shapes(*(x.shape[:-2] for x in (*train, *inputs)))
        full_inputs = [
            torch.cat([a.expand(*batch, *a.shape[-2:]), b.expand(*batch, *b.shape[-2:])], dim=-2)
            for a, b in zip(train, inputs)
        ]
        full = self._prior(*full_inputs, **kwargs)  # lazy: only the test blocks below are evaluated
        mean_full, covar_full = full.mean, full.lazy_covariance_matrix
        K_sx, test_covar = joint_blocks(covar_full, n)
        mean, covar = posterior.predict(mean_full[..., n:], K_sx, test_covar)
        return PosteriorMultivariateNormal(mean, covar)

    def _posterior(self, **kwargs) -> ExactPosterior:
        """The cached posterior, rebuilt when a parameter, buffer or the training data changed."""
        key = self._state_key()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[2]
        prior = self._prior(*self.train_inputs, **kwargs)
        noisy = self.likelihood.marginal(prior, *self.train_inputs)
        post = exact_posterior(  # NaN targets: masked or refused, per settings.observation_nan_policy
            self.train_inputs[0], self.train_targets, prior.mean, noisy.lazy_covariance_matrix, self.likelihood
        )
        if settings.detach_test_caches.on() or not torch.is_grad_enabled():
            post = post.detach()
        self._cache = (key, None, post)
        return post

    # ------------------------------------------------------------------ likelihood
    def log_likelihood(self, output: MultivariateNormal, target: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log marginal likelihood ``log p(y | X, θ)`` (not divided by n; no priors).

        Args:
            output: the prior returned by ``model(train_x)`` in train mode, ``(*batch, n)``.
            target: ``(*batch, n)`` or ``(*batch, n, 1)``; default the training targets.

        Returns:
            A scalar: summed over a batch of independent GPs (their joint log-likelihood).
        """
        target = (
            self.train_targets
            if target is None
            else check_train_targets(target, self.train_inputs[0], self._multi_output, check_finite=False)
        )
        return finite_or_explained(
            self, lambda: self.likelihood.marginal(output, *self.train_inputs).log_prob(target).sum(), target
        )

    def get_fantasy_model(self, inputs, targets, **kwargs) -> ExactGP:
        """A new model conditioned on extra observations, its cached factor updated in O(n²q).

        See :func:`torchgp.models.fantasy.fantasy_model` (GPyTorch's semantics: a leading fantasy
        batch in ``targets`` gives a batch of fantasy models; ``noise=`` gives the new points'
        variances for a ``FixedNoiseGaussianLikelihood``).

        Args:
            inputs: ``(*batch, q, d)`` or ``(f, *batch, q, d)`` (or a tuple of such tensors).
            targets: ``(*batch, q)`` or ``(f, *batch, q)``.
            **kwargs: ``noise=`` ``(*batch, q)`` for fixed-noise likelihoods; others go to the likelihood.

        Returns:
            An :class:`ExactGP` with ``n + q`` training points and batch shape ``(f, *batch)``.
        """
        from torchgp.models.fantasy import fantasy_model

        if self._multi_output:
            return multitask_fantasy_model(self, inputs, targets, **kwargs)
        return fantasy_model(self, inputs, targets, **kwargs)


def finite_or_explained(module, compute, target: torch.Tensor) -> torch.Tensor:
    """``compute()`` (a loss), with a :class:`NonFiniteError` naming the culprit if it is NaN/inf.

    A Cholesky failure caused by a parameter that went NaN is reported as that parameter's fault.
    """
    try:
        res = compute()
    except NotPSDError as err:
        if module.non_finite_parameters():  # the factorisation failed because a parameter went bad: name it
            raise NonFiniteError(describe_nonfinite(module)) from err
        raise
    if not all_finite(res):
        raise NonFiniteError(describe_nonfinite(module, target))
    return res


def describe_nonfinite(module, target: torch.Tensor | None = None) -> str:
    """Message for a loss that became NaN/inf, naming the parameters (or target points) that went bad."""
    rows = nonfinite_rows(target, -1) if target is not None else []
    if rows:
        return (
            f"The loss is not finite because the targets hold NaN or inf at {len(rows)} point(s) (first: "
            f"{rows[:10]}). Drop those points (from inputs and targets) or impute them."
        )
    bad = module.non_finite_parameters()
    if bad:
        return (
            f"The loss is not finite because these parameters hold NaN or inf: {', '.join(bad)}. The optimiser "
            "diverged: lower the learning rate, add priors, or re-initialise them."
        )
    return (
        "The loss is not finite although every parameter is finite: a hyperparameter is at an extreme value "
        "(overflow) or a custom kernel/mean returned NaN. Check model.named_hyperparameters()."
    )
