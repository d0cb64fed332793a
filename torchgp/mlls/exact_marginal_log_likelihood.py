r"""The exact marginal log-likelihood, divided by n (GPyTorch's normalisation).

.. math::
    \frac1n\Big[-\tfrac12 (y-\mu)^\top (K+\sigma^2 I)^{-1}(y-\mu) - \tfrac12\log|K+\sigma^2I| - \tfrac n2\log 2\pi
    + \sum_{\text{priors}} \log p(\theta) + \sum_j a_j\Big]

(R&W 2006, eq. 2.30.) :math:`a_j` are the model's added loss terms (:class:`~torchgp.mlls.AddedLossTerm`).
Under ``settings.observation_nan_policy('mask')`` (or ``'fill'``) NaN targets are missing
observations: the log marginal is that of the observed points, exactly
(:mod:`torchgp.models.missing_data`). Its gradient (eq. 5.9) comes from autograd over the analytic backward of
:func:`torchgp.linalg.inv_quad_logdet`.
"""

from __future__ import annotations

from contextvars import ContextVar

import torch

from torchgp.distributions import MultivariateNormal
from torchgp.errors import ModelTypeError, NonFiniteError
from torchgp.likelihoods.gaussian import _GaussianLikelihoodBase
from torchgp.mlls.marginal_log_likelihood import MarginalLogLikelihood
from torchgp.models._diagnostics import warn_eval_mode_objective
from torchgp.models.exact_gp import finite_or_explained
from torchgp.models.missing_data import masked_log_prob, masking_on, nan_targets_message
from torchgp.models.validation import check_train_targets
from torchgp.module import fit_memoised

# True inside a batched fit that adds each member's own log-prior itself (torchgp.optim._batched.member_objective)
_EXCLUDE_PRIORS: ContextVar[bool] = ContextVar("torchgp_exact_mll_exclude_priors", default=False)


class ExactMarginalLogLikelihood(MarginalLogLikelihood):
    """Objective for :class:`~torchgp.models.ExactGP`.

    Args:
        likelihood: a Gaussian likelihood.
        model: the ExactGP.

    Shapes:
        ``mll(output (*batch, n), target (*batch, n) or (*batch, n, 1))`` → ``(*batch)``.

    Example:
        ``loss = -mll(model(train_x), train_y); loss.backward()``
    """

    def __init__(self, likelihood, model):
        if not isinstance(likelihood, _GaussianLikelihoodBase):
            raise ModelTypeError(
                f"ExactMarginalLogLikelihood needs a Gaussian likelihood; got {type(likelihood).__name__}. "
                "Use VariationalELBO with an ApproximateGP for other likelihoods."
            )
        super().__init__(likelihood, model)

    def forward(self, function_dist: MultivariateNormal, target: torch.Tensor, *params, **kwargs) -> torch.Tensor:
        if not isinstance(function_dist, MultivariateNormal):
            raise ModelTypeError(
                f"mll expects the model's MultivariateNormal output; got {type(function_dist).__name__}."
            )
        warn_eval_mode_objective(self, stacklevel=5)  # eval mode: the output is the posterior, not the prior
        train_x = self.model.train_inputs[0] if getattr(self.model, "train_inputs", None) else None
        if train_x is not None:
            target = self._checked_targets(target, train_x)
            params = params or tuple(self.model.train_inputs)
        output = self.likelihood(function_dist, *params, **kwargs)
        n = function_dist.event_shape.numel()  # GPyTorch divides by all n rows, missing ones included
        log_prob = masked_log_prob if masking_on(self.likelihood) else type(output).log_prob

        def compute():
            other = self._other_terms(params)
            none = isinstance(other, float) and other == 0.0  # no priors, no added terms: no extra node
            if log_prob is MultivariateNormal.log_prob:  # 1/n folded into the density's one autograd node
                value = output._scaled_log_prob(target, 1.0 / n)
                return value if none else value + other / n
            value = log_prob(output, target)
            return (value if none else value + other) / n

        try:
            return finite_or_explained(self, compute, target)
        except NonFiniteError as err:
            if torch.isnan(target).any():  # only on the error path: no scan on the hot path
                raise NonFiniteError(nan_targets_message(target)) from err
            raise

    def _checked_targets(self, target: torch.Tensor, train_x: torch.Tensor) -> torch.Tensor:
        """``check_train_targets`` of ``target``; within one fit run, once per (target, inputs) pair."""
        multi = getattr(self.model, "_multi_output", False)
        return fit_memoised(
            ("targets", id(self)),
            (target, train_x),
            lambda: check_train_targets(target, train_x, multi, check_finite=False),
        )

    def _walk(self) -> list[tuple[torch.nn.Module, bool]]:
        """``(module, with added loss terms)`` in the order :meth:`_other_terms` visits them; memoised per fit run.

        The model's subtree first (its priors and added loss terms), then the rest of this objective's (priors
        only, e.g. a likelihood that is not the model's); each module once.
        """
        return fit_memoised(("walk", id(self)), (self.model,), self._module_order)

    def _module_order(self) -> list[tuple[torch.nn.Module, bool]]:
        order, seen = [], set()
        for root, with_terms in ((self.model, True), (self, False)):
            stack = [root] if isinstance(root, torch.nn.Module) else []
            while stack:
                module = stack.pop()
                if id(module) in seen:
                    continue
                seen.add(id(module))
                order.append((module, with_terms))
                stack.extend(child for child in module._modules.values() if child is not None)
        return order

    def _other_terms(self, params) -> torch.Tensor | float:
        """Σ log p(θ) plus every added loss term of the model (GPyTorch adds them before dividing by n).

        The priors and terms are read afresh at each call from the modules of :meth:`_walk`. The float 0.0 when
        there is neither.
        """
        total, seen_terms = 0.0, set()
        with_priors = not _EXCLUDE_PRIORS.get()
        for module, with_terms in self._walk():
            state = module.__dict__
            closures = state.get("_prior_closures") if with_priors else None
            if closures:
                for name, (closure, _) in closures.items():
                    total = total + module._modules[name].log_prob(closure(module)).sum()
            if with_terms:
                terms = state.get("_added_loss_terms")
                if terms:
                    for term in terms.values():
                        if term is not None and id(term) not in seen_terms:
                            seen_terms.add(id(term))
                            total = total + term.loss(*params)
        return total
