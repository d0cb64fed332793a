r"""The exact GP's loss during ``fit``, evaluated from its parts instead of through its module layers.

A fit of a small exact GP spends most of each evaluation in Python: the model's ``__call__`` and the
user's ``forward``, the likelihood's marginal, the objective's checks, the solver's choice and the
operator that holds the kernel matrix, each a few microseconds, around a kernel matrix and a
Cholesky factor that at n = 20 take less time than all of them. Within one fit those layers always
compose the same way, so :class:`DirectExact` evaluates what they compute, directly:

.. math::
    -\frac1n \log \mathcal N\big(y;\ \mu(X),\ K(X, X) + \operatorname{diag}\sigma^2\big),
    \qquad \mu = \texttt{mean\_module}(X),\quad K = \texttt{covar\_module}(X, X),\quad
    \sigma^2 = \texttt{likelihood}\text{'s noise at } X

(R&W 2006, eq. 2.30, divided by n as GPyTorch does), through the same autograd nodes the full path
uses (the kernel's dense block, :class:`~torchgp.linalg.inv_quad_logdet.CholeskyGaussianLogProb`).

It applies only to the composition it can state exactly: an :class:`~torchgp.mlls.ExactMarginalLogLikelihood`
without priors or added loss terms, over an :class:`~torchgp.models.ExactGP` with one training input
tensor and single-output targets, a Gaussian likelihood, no forward hooks anywhere, the Cholesky
path (``n ≤ settings.max_cholesky_size``) and no missing-target policy. Whether the user's
``forward`` is ``MultivariateNormal(self.mean_module(x), self.covar_module(x))`` is checked at the
fit's first evaluation (:class:`FitLoss`): the model is called as usual, its output must hold
``covar_module``'s own lazy matrix at the training inputs and ``mean_module``'s values, and the direct
loss and gradients must equal the full path's. Otherwise every evaluation takes the full path.
"""

from __future__ import annotations

import math

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.linalg.inv_quad_logdet import CholeskyGaussianLogProb
from torchgp.linalg.operators.kernel import KernelOperator
from torchgp.module import reuse_constrained_values

_LOG_2PI = math.log(2 * math.pi)


class DirectExact:
    """``-mll(model(X), y)`` of a standard exact GP from its mean, kernel and noise, ``(*batch)``."""

    def __init__(self, mll, model):
        self.mll, self.model = mll, model

    @classmethod
    def build(cls, mll, model) -> DirectExact | None:
        """A :class:`DirectExact` for ``mll`` when its structure allows one (see the module's text), else None."""
        from torchgp.likelihoods.gaussian import _GaussianLikelihoodBase
        from torchgp.mlls import ExactMarginalLogLikelihood
        from torchgp.models import ExactGP
        from torchgp.models.missing_data import masking_on

        if type(mll) is not ExactMarginalLogLikelihood or not isinstance(model, ExactGP) or mll.model is not model:
            return None
        likelihood = mll.likelihood
        if not isinstance(likelihood, _GaussianLikelihoodBase) or getattr(model, "_multi_output", False):
            return None
        inputs, targets = model.__dict__.get("train_inputs"), model.__dict__.get("train_targets")
        if not isinstance(inputs, tuple) or len(inputs) != 1 or not torch.is_tensor(targets):
            return None
        x = inputs[0]
        if not torch.is_tensor(x) or x.dim() < 2 or targets.shape != x.shape[:-1] or targets.dtype != x.dtype:
            return None
        mean_module, covar_module = getattr(model, "mean_module", None), getattr(model, "covar_module", None)
        if not isinstance(mean_module, torch.nn.Module) or not isinstance(covar_module, torch.nn.Module):
            return None
        n = x.shape[-2]
        solve_dtype = settings.solve_dtype.value()
        if (
            n > settings.max_cholesky_size.value()
            or settings.skip_logdet_forward.on()
            or (solve_dtype is not None and solve_dtype != x.dtype)
            or not settings.lazily_evaluate_kernels.on()
            or masking_on(likelihood)
        ):
            return None
        for module in mll.modules():
            state = module.__dict__
            if module._forward_hooks or module._forward_pre_hooks or state.get("_prior_closures"):
                return None
            if state.get("_added_loss_terms"):
                return None
        return cls(mll, model)

    def values(self) -> torch.Tensor:
        """``mll(model(X), y)`` at the current parameters, ``(*batch)``, differentiable (call inside a
        :func:`~torchgp.module.reuse_constrained_values` context, as the full path is)."""
        return self._values()[0]

    def _values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values (*batch), the mean μ(X) (*batch, n))``."""
        model = self.model
        x = model.train_inputs[0]
        y = model.train_targets
        n = x.shape[-2]
        mean = model.mean_module(x)  # (*batch, n)
        K = model.covar_module.evaluate_block(x, x)  # (*batch, n, n): what the prior's lazy matrix evaluates to
        noise = self.mll.likelihood._noise(mean, x)  # (*batch, n): what the likelihood's marginal adds
        batch = broadcast_shapes(K.shape[:-2], mean.shape[:-1], y.shape[:-1], noise.shape[:-1])
        if K.shape[:-2] != batch:
            K = K.expand(*batch, n, n)
        if noise.shape[:-1] != batch:
            noise = noise.expand(*batch, n)
        w = -0.5 / n  # GPyTorch's 1/n folded into the density's node, as ExactMarginalLogLikelihood does
        return CholeskyGaussianLogProb.apply(K, noise, y, mean, w, w * n * _LOG_2PI), mean

    def matches(self, output, mean: torch.Tensor) -> bool:
        """Whether the model's train-mode ``output`` is ``MultivariateNormal(mean_module(X), covar_module(X))``,
        given ``mean``, what ``mean_module(X)`` returns."""
        model = self.model
        x = model.train_inputs[0]
        covar = getattr(output, "lazy_covariance_matrix", None)
        if not isinstance(covar, KernelOperator) or covar.kernel is not model.covar_module:
            return False
        if any(key != "last_dim_is_batch" or value for key, value in covar.params.items()):
            return False
        if covar.x1 is not x or covar.x2 is not x:
            return False
        return mean.shape == output.mean.shape and torch.equal(mean.detach(), output.mean.detach())


class FitLoss:
    """The fit's loss callable: the full path at the first evaluation, then :class:`DirectExact` if it matched.

    ``FitLoss(mll, model, full, reduce)()`` returns the loss ``full()`` would (``full``: the full path's loss
    callable; ``reduce``: True for the scalar ``-Σ mll``, False for the per-member ``-mll`` ``(B,)`` of the
    lockstep). The first call evaluates ``full`` and, where a :class:`DirectExact` could be built, checks it
    there: the same output structure, the same loss to rounding (8 ulps) and the same gradients
    (``1e-10`` of the largest in float64, ``1e-5`` in float32). Every later call takes the path chosen then.
    """

    def __init__(self, mll, model, full, reduce: bool, params: list[torch.Tensor]):
        self.full, self.reduce, self.params = full, reduce, params
        self.direct = DirectExact.build(mll, model)
        self.checked = self.direct is None
        self.used = False  # whether the direct path was verified and is in use

    def __call__(self) -> torch.Tensor:
        if self.used:
            with reuse_constrained_values():
                return self._loss(self.direct.values())
        loss = self.full()
        if not self.checked:
            self.checked = True
            self.used = self._verify(loss)
        return loss

    def _loss(self, values: torch.Tensor) -> torch.Tensor:
        """The loss ``full()`` returns from the direct ``mll`` values ``(*batch)``: ``-Σ`` or ``-values``."""
        return -values.sum() if self.reduce and values.dim() else -values

    def _verify(self, loss: torch.Tensor) -> bool:
        """Whether the direct path gives ``loss`` and its gradients at the current parameters."""
        direct = self.direct
        model = direct.model
        try:
            with torch.no_grad():
                output = model(*model.train_inputs)
            with reuse_constrained_values():
                values, mean = direct._values()
            if not direct.matches(output, mean):
                return False
            other = self._loss(values)
            if other.shape != loss.shape or not bool(torch.isfinite(loss).all()):
                return False
            eps = torch.finfo(loss.dtype).eps
            if not bool(((other - loss).abs() <= 8 * eps * loss.abs().clamp_min(1.0)).all()):
                return False
            params = [p for p in self.params if p.requires_grad]
            g_full = torch.autograd.grad(loss.sum(), params, retain_graph=True, allow_unused=True)
            g_direct = torch.autograd.grad(other.sum(), params, allow_unused=True)
        except Exception:  # anything the direct path cannot evaluate: the full path it is
            return False
        tol = 1e-10 if loss.dtype == torch.float64 else 1e-5
        for a, b, p in zip(g_full, g_direct, params):
            a = torch.zeros_like(p) if a is None else a
            b = torch.zeros_like(p) if b is None else b
            scale = max(1.0, float(a.abs().max())) if a.numel() else 1.0
            if not bool(((a - b).abs() <= tol * scale).all()):
                return False
        return True
