"""Lists of independent GP models, one per output (GPyTorch's ``IndependentModelList``).

Each model keeps its own inputs, data, hyperparameters and likelihood; calling the list calls every
model on its own inputs. Train them jointly with :class:`~torchgp.mlls.SumMarginalLogLikelihood`.
"""

from __future__ import annotations

import torch
from torch.nn import ModuleList

from torchgp.errors import InputError, ModelTypeError
from torchgp.likelihoods.likelihood_list import LikelihoodList
from torchgp.models.gp import GP, call_with_hooks


def _per_model_args(num: int, args) -> list[tuple]:
    """One argument tuple per model: a tensor is that model's input, a tuple/list its inputs."""
    args = list(args)
    if len(args) != num:
        raise InputError(
            f"The model list holds {num} models but got {len(args)} input(s); pass one input per model, "
            "e.g. model(x1, x2) or model(*model.train_inputs)."
        )
    return [(arg,) if torch.is_tensor(arg) else tuple(arg) for arg in args]


class AbstractModelList(GP):
    """Base of multi-output models made of separate models; subclasses give ``forward_i`` and ``likelihood_i``."""

    def forward_i(self, i: int, *args, **kwargs):
        """The prior of the ``i``-th model only."""
        raise NotImplementedError

    def likelihood_i(self, i: int, *args, **kwargs):
        """The ``i``-th model's likelihood applied to ``args``."""
        raise NotImplementedError


class IndependentModelList(AbstractModelList):
    """Independent models side by side; ``model(x_1, ..., x_k)`` is ``[model_1(x_1), ..., model_k(x_k)]``.

    Args:
        *models: GP models that each have a ``likelihood`` (ExactGPs, or approximate GPs given one).

    Attributes:
        models: the ``ModuleList`` of models. likelihood: a :class:`~torchgp.likelihoods.LikelihoodList`
            of their likelihoods (the same modules). num_outputs: the number of models.

    Shapes:
        ``x_i`` ``(*batch, t_i, d_i)`` (or a tuple of a model's inputs) → list of distributions ``(*batch, t_i)``.

    Example:
        ``model = IndependentModelList(m1, m2); mll = SumMarginalLogLikelihood(model.likelihood, model)``;
        ``loss = -mll(model(*model.train_inputs), model.train_targets)``.
    """

    def __init__(self, *models):
        super().__init__()
        if not models:
            raise InputError("IndependentModelList needs at least one model.")
        for i, m in enumerate(models):
            if not hasattr(m, "likelihood"):
                raise ModelTypeError(
                    f"IndependentModelList: model {i} ({type(m).__name__}) has no likelihood; give every model a "
                    "likelihood attribute (ExactGPs have one)."
                )
        self.models = ModuleList(models)
        self.likelihood = LikelihoodList(*[m.likelihood for m in models])

    @property
    def num_outputs(self) -> int:
        return len(self.models)

    def forward_i(self, i: int, *args, **kwargs):
        return self.models[i].forward(*args, **kwargs)

    def likelihood_i(self, i: int, *args, **kwargs):
        return self.likelihood.likelihoods[i](*args, **kwargs)

    def forward(self, *args, **kwargs) -> list:
        """The priors ``[model_i.forward(x_i)]``."""
        per = _per_model_args(len(self.models), args)
        return [m.forward(*a, **kwargs) for m, a in zip(self.models, per)]

    def __call__(self, *args, **kwargs) -> list:
        return call_with_hooks(self, self._call_models, args, kwargs)  # forward hooks see the list's outputs

    def _call_models(self, *args, **kwargs) -> list:
        per = _per_model_args(len(self.models), args)
        return [m(*a, **kwargs) for m, a in zip(self.models, per)]

    @property
    def train_inputs(self) -> list:
        return [m.train_inputs for m in self.models]

    @property
    def train_targets(self) -> list:
        return [m.train_targets for m in self.models]

    def get_fantasy_model(self, inputs, targets, **kwargs) -> IndependentModelList:
        """A new list of each model's fantasy model on its own new ``inputs[i]`` / ``targets[i]``.

        Args:
            inputs: one input (tensor or tuple of tensors) per model. targets: one target tensor per model.
            noise: optional list with one noise tensor (or None) per model, passed as ``noise=`` to each.
        """
        num = len(self.models)
        per_inputs = _per_model_args(num, inputs)
        per_targets = _per_model_args(num, targets)
        noise = kwargs.pop("noise", None)
        per_kwargs = [dict(kwargs) for _ in range(num)]
        if noise is not None:
            noise = list(noise)
            if len(noise) != num:
                raise InputError(f"noise must hold one tensor (or None) per model ({num}); got {len(noise)}.")
            for kw, noise_i in zip(per_kwargs, noise):
                if noise_i is not None:
                    kw["noise"] = noise_i
        fantasies = []
        for i, (m, x, y, kw) in enumerate(zip(self.models, per_inputs, per_targets, per_kwargs)):
            if not hasattr(m, "get_fantasy_model"):
                raise ModelTypeError(f"Model {i} ({type(m).__name__}) has no get_fantasy_model.")
            fantasies.append(m.get_fantasy_model(*x, *y, **kw))
        return type(self)(*fantasies)
