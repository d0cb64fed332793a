r"""Dirichlet-based GP classification (Milios et al. 2018): labels as heteroskedastic regression targets.

For ``C`` classes, label :math:`c_i` becomes ``C`` regression targets through the Dirichlet
pseudo-counts :math:`\alpha_{ij} = \alpha_\epsilon + [c_i = j]`, each approximated by a log-normal:

.. math::
    \sigma^2_{ij} = \log\big(1/\alpha_{ij} + 1\big),\qquad
    \tilde y_{ij} = \log\alpha_{ij} - \tfrac12\sigma^2_{ij}

(Milios et al. 2018, eq. 7–8, moment matching of the Gamma marginals). A batch of ``C``
independent GPs is fit to :math:`\tilde y` with the fixed noise :math:`\sigma^2`; the class
probabilities are :math:`\mathbb E[\operatorname{softmax}(f)]` under the predictive.
"""

from __future__ import annotations

import torch

from torchgp.errors import InputError, ShapeError
from torchgp.likelihoods.gaussian import FixedNoiseGaussianLikelihood


def dirichlet_targets(targets: torch.Tensor, alpha_epsilon: float, num_classes: int, dtype: torch.dtype):
    r"""Noise ``σ²`` and transformed targets ``ỹ``, each ``(C, n)``, for labels ``(n,)`` (eq. 7–8).

    Shapes:
        targets ``(n,)`` integer labels in ``[0, C)`` → ``((C, n), (C, n))``.
    """
    if targets.dim() != 1:
        raise ShapeError(f"Dirichlet classification labels must have shape (n,); got {tuple(targets.shape)}.")
    if targets.dtype.is_floating_point:
        if not torch.equal(targets, targets.round()):
            raise InputError("Dirichlet classification labels must be integers 0..C-1; got non-integer values.")
        targets = targets.long()
    if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
        raise InputError(f"Dirichlet classification labels must lie in 0..{num_classes - 1}; got {targets.tolist()}.")
    alpha = torch.full((targets.shape[-1], num_classes), alpha_epsilon, dtype=dtype, device=targets.device)
    alpha[torch.arange(targets.shape[-1], device=targets.device), targets] += 1.0
    sigma2 = torch.log(alpha.reciprocal() + 1.0)  # eq. 7
    transformed = alpha.log() - 0.5 * sigma2  # eq. 8
    return sigma2.mT.contiguous(), transformed.mT.contiguous()


class DirichletClassificationLikelihood(FixedNoiseGaussianLikelihood):
    r"""Classification as regression on Dirichlet-transformed labels, with fixed heteroskedastic noise.

    Args:
        targets: ``(n,)`` integer class labels ``0..C-1``.
        alpha_epsilon: pseudo-count :math:`\alpha_\epsilon` of the classes a point is not in (0.01 by default;
            choose by cross-validation).
        learn_additional_noise: also learn a homoskedastic noise added to the fixed one.
        batch_shape: ignored in favour of ``(C,)`` (one GP per class), as in GPyTorch.
        dtype: dtype of the noise and the transformed targets.

    Attributes:
        transformed_targets: ``(C, n)`` regression targets for the batch of ``C`` GPs.
        num_classes: ``C``. targets: the labels given.

    Shapes:
        ``likelihood(f)`` for ``f (C, n)`` → Normal ``(C, n)``; for new points pass ``targets=labels (t,)``
        or ``noise=(C, t)``, or neither (the mean training noise is used, with a warning).

    Example:
        >>> import torch, torchgp
        >>> lik = torchgp.likelihoods.DirichletClassificationLikelihood(torch.tensor([0, 2, 1, 2]))
        >>> lik.num_classes, tuple(lik.transformed_targets.shape)
        (3, (3, 4))
    """

    def __init__(
        self,
        targets: torch.Tensor,
        alpha_epsilon: float = 0.01,
        learn_additional_noise: bool = False,
        batch_shape: torch.Size = torch.Size(),
        dtype: torch.dtype = torch.float,
        **kwargs,
    ):
        if not torch.is_tensor(targets) or targets.numel() == 0:
            raise InputError("DirichletClassificationLikelihood needs a non-empty tensor of labels (n,).")
        if not alpha_epsilon > 0:
            raise InputError(f"alpha_epsilon must be positive; got {alpha_epsilon!r}.")
        num_classes = int(targets.max()) + 1
        sigma2, transformed = dirichlet_targets(targets, alpha_epsilon, num_classes, dtype)
        super().__init__(
            noise=sigma2,
            learn_additional_noise=learn_additional_noise,
            batch_shape=torch.Size([num_classes]),
            **kwargs,
        )
        self.transformed_targets = transformed
        self.num_classes = num_classes
        self.targets = targets
        self.alpha_epsilon = alpha_epsilon

    def _labels_to_noise(self, targets: torch.Tensor) -> torch.Tensor:
        sigma2, _ = dirichlet_targets(targets, self.alpha_epsilon, self.num_classes, self.transformed_targets.dtype)
        return sigma2

    def __call__(self, input, *args, **kwargs):
        if "targets" in kwargs:  # the noise of labelled new points
            kwargs["noise"] = self._labels_to_noise(kwargs.pop("targets"))
        return super().__call__(input, *args, **kwargs)

    def get_fantasy_likelihood(self, **kwargs) -> DirichletClassificationLikelihood:
        """A copy whose fixed noise also covers new labelled points (``targets=labels (t,)``)."""
        import copy

        if "targets" not in kwargs:
            raise InputError("get_fantasy_likelihood needs targets=labels (t,) of the new points.")
        new_labels = torch.as_tensor(kwargs["targets"]).to(self.targets.device)
        new = copy.deepcopy(self)
        new_noise = self._labels_to_noise(new_labels)
        new.noise = torch.cat([self.noise.expand(*new_noise.shape[:-1], self.noise.shape[-1]), new_noise], -1)
        new.targets = torch.cat([self.targets, new_labels.to(self.targets.dtype)], -1)
        _, new.transformed_targets = dirichlet_targets(
            new.targets, self.alpha_epsilon, self.num_classes, self.transformed_targets.dtype
        )
        return new
