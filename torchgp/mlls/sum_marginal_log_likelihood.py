r"""The objective of an :class:`~torchgp.models.IndependentModelList`: the mean of the models' objectives.

.. math:: \mathcal L = \frac1k \sum_{i=1}^{k} \mathcal L_i(\text{output}_i, y_i)

Each :math:`\mathcal L_i` is the sub-model's own objective (per datum, with its priors and added
loss terms), so the gradient of each model's hyperparameters is that of its own objective over
``k``. (GPyTorch divides by ``k`` too; with independent outputs the optimum is the same as the sum's.)
"""

from __future__ import annotations

from torch.nn import ModuleList

from torchgp.errors import InputError
from torchgp.mlls.exact_marginal_log_likelihood import ExactMarginalLogLikelihood
from torchgp.mlls.marginal_log_likelihood import MarginalLogLikelihood


class SumMarginalLogLikelihood(MarginalLogLikelihood):
    """Objective of a model list: ``mll_cls(model_i.likelihood, model_i)`` per model, averaged.

    Args:
        likelihood: the list's :class:`~torchgp.likelihoods.LikelihoodList` (the models' own likelihoods are used).
        model: an :class:`~torchgp.models.IndependentModelList`.
        mll_cls: the objective of each model (default :class:`ExactMarginalLogLikelihood`).

    Shapes:
        ``mll(outputs [k distributions (*batch, n_i)], targets [k tensors (*batch, n_i)])`` → ``(*batch)``;
        optional ``*params``: one tuple of extra arguments per model.
    """

    def __init__(self, likelihood, model, mll_cls=ExactMarginalLogLikelihood):
        if not hasattr(model, "models"):
            raise InputError(
                f"SumMarginalLogLikelihood needs a model list (IndependentModelList); got {type(model).__name__}."
            )
        super().__init__(model.likelihood, model)
        self.mlls = ModuleList([mll_cls(m.likelihood, m) for m in model.models])

    def forward(self, outputs, targets, *params):
        outputs, targets = list(outputs), list(targets)
        k = len(self.mlls)
        if len(outputs) != k or len(targets) != k:
            raise InputError(
                f"SumMarginalLogLikelihood over {k} models got {len(outputs)} outputs and {len(targets)} targets; "
                "pass mll(model(*model.train_inputs), model.train_targets)."
            )
        per_params = [tuple(p) for p in params] if params else [() for _ in range(k)]
        if len(per_params) != k:
            raise InputError(f"params must hold one tuple of arguments per model ({k}); got {len(per_params)}.")
        total = sum(mll(out, y, *p) for mll, out, y, p in zip(self.mlls, outputs, targets, per_params))
        return total / k
