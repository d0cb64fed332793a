r"""Latent inputs of a GPLVM: point (MLE), MAP and variational estimates of :math:`\mathbf X`.

A GPLVM (Lawrence 2005; Titsias & Lawrence 2010) explains data :math:`\mathbf Y \in \mathbb R^{n\times D}` by
:math:`D` independent GPs on unobserved inputs :math:`\mathbf X \in \mathbb R^{n\times q}`. Calling a latent variable
module returns the inputs to feed the GP this step, ``(n, latent_dim)``:

- :class:`PointLatentVariable`: :math:`\mathbf X` is a free parameter (maximum likelihood);
- :class:`MAPLatentVariable`: the same, with ``log p(X)`` added to the objective through a registered prior;
- :class:`VariationalLatentVariable`: :math:`q(\mathbf X) = \prod_{i,k} \mathcal N(x_{ik} \mid \mu_{ik}, \sigma_{ik}^2)`,
  a reparameterised draw is returned and :math:`\mathrm{KL}(q(\mathbf X)\,\|\,p(\mathbf X)) / (nD)` is registered
  as the added loss term ``x_kl`` (Titsias & Lawrence 2010, eq. 10, per datum and per output).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import softplus

from torchgp.errors import InputError, ModelTypeError, ShapeError
from torchgp.module import Module
from torchgp.priors.prior import Prior

__all__ = ["LatentVariable", "PointLatentVariable", "MAPLatentVariable", "VariationalLatentVariable"]


def _check_sizes(name: str, n, latent_dim, X_init) -> nn.Parameter:
    """``X_init`` as the parameter to register: an ``nn.Parameter`` is used as is, a tensor is copied."""
    for label, value in (("n", n), ("latent_dim", latent_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name}: {label} must be a positive int; got {value!r}.")
    if not torch.is_tensor(X_init):
        raise InputError(
            f"{name}: X_init must be a tensor of shape (n, latent_dim) = ({n}, {latent_dim}); "
            f"got {type(X_init).__name__}."
        )
    if X_init.shape != torch.Size([n, latent_dim]):
        raise ShapeError(
            f"{name}: X_init must have shape (n, latent_dim) = ({n}, {latent_dim}); got {tuple(X_init.shape)}. "
            "Initialise it e.g. with torch.randn(n, latent_dim) or the first latent_dim principal components of Y."
        )
    return X_init if isinstance(X_init, nn.Parameter) else nn.Parameter(X_init.detach().clone())


class LatentVariable(Module):
    """Base of the latent inputs of a GPLVM; ``forward()`` returns the inputs ``(n, latent_dim)``.

    Args:
        n: number of data points (rows of :math:`\\mathbf X`).
        dim: latent dimensionality ``q``.
    """

    def __init__(self, n: int, dim: int):
        super().__init__()
        self.n = n
        self.latent_dim = dim

    def forward(self, *args, **kwargs) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward() returning X (n, latent_dim).")


class PointLatentVariable(LatentVariable):
    """Maximum-likelihood point estimate of :math:`\\mathbf X` (a free parameter ``X``).

    Args:
        n: number of data points.
        latent_dim: latent dimensionality ``q``.
        X_init: initial value, ``(n, latent_dim)`` (an ``nn.Parameter`` becomes ``X`` itself; a tensor is copied).

    Shapes:
        ``forward()`` → ``X`` ``(n, latent_dim)``.
    """

    def __init__(self, n: int, latent_dim: int, X_init: torch.Tensor):
        X_init = _check_sizes(type(self).__name__, n, latent_dim, X_init)
        super().__init__(n, latent_dim)
        self.register_parameter("X", X_init)

    def forward(self) -> torch.Tensor:
        return self.X


class MAPLatentVariable(LatentVariable):
    """MAP estimate of :math:`\\mathbf X`: the parameter ``X`` with the prior ``prior_x`` registered on it.

    The variational objectives add ``log p(X) / N`` (the registered prior, as for any hyperparameter).

    Args:
        n: number of data points.
        latent_dim: latent dimensionality ``q``.
        X_init: initial value, ``(n, latent_dim)`` (an ``nn.Parameter`` becomes ``X`` itself; a tensor is copied).
        prior_x: a :class:`~torchgp.priors.Prior` whose ``log_prob(X)`` is defined, e.g.
            ``NormalPrior(torch.zeros(n, latent_dim), torch.ones(n, latent_dim))``.

    Shapes:
        ``forward()`` → ``X`` ``(n, latent_dim)``.
    """

    def __init__(self, n: int, latent_dim: int, X_init: torch.Tensor, prior_x):
        X_init = _check_sizes(type(self).__name__, n, latent_dim, X_init)
        if not callable(getattr(prior_x, "log_prob", None)) or not isinstance(prior_x, nn.Module):
            raise ModelTypeError(
                f"MAPLatentVariable: prior_x must be a torchgp prior (e.g. torchgp.priors.NormalPrior); got "
                f"{type(prior_x).__name__}."
            )
        super().__init__(n, latent_dim)
        self.prior_x = prior_x
        self.register_parameter("X", X_init)
        self.register_prior("prior_x", prior_x, "X")

    def forward(self) -> torch.Tensor:
        return self.X


class VariationalLatentVariable(LatentVariable):
    r"""Mean-field Gaussian :math:`q(\mathbf X)` with the KL to ``prior_x`` as an added loss term.

    .. math:: q(x_{ik}) = \mathcal N\big(\mu_{ik}, \operatorname{softplus}(\rho_{ik})^2\big)

    with ``q_mu`` (:math:`\mu`, initialised to ``X_init``) and ``q_log_sigma`` (:math:`\rho`, initialised to
    standard normal draws) as parameters. Each call returns one reparameterised draw of :math:`\mathbf X` and sets
    the added loss term ``x_kl`` to :class:`~torchgp.mlls.KLGaussianAddedLossTerm` ``(q(X), p(X), n, data_dim)``,
    i.e. :math:`\mathrm{KL}(q\,\|\,p)/(nD)`, which the variational objectives subtract.

    Args:
        n: number of data points.
        data_dim: number of output dimensions ``D`` of :math:`\mathbf Y`.
        latent_dim: latent dimensionality ``q``.
        X_init: initial variational mean, ``(n, latent_dim)``.
        prior_x: the prior :math:`p(\mathbf X)`, a Gaussian of shape ``(n, latent_dim)``, e.g.
            ``NormalPrior(torch.zeros(n, latent_dim), torch.ones(n, latent_dim))``.

    Shapes:
        ``forward()`` → a draw of ``X`` ``(n, latent_dim)``.
    """

    def __init__(self, n: int, data_dim: int, latent_dim: int, X_init: torch.Tensor, prior_x):
        X_init = _check_sizes(type(self).__name__, n, latent_dim, X_init)
        if isinstance(data_dim, bool) or not isinstance(data_dim, int) or data_dim < 1:
            raise InputError(f"VariationalLatentVariable: data_dim must be a positive int; got {data_dim!r}.")
        if not isinstance(prior_x, torch.distributions.Distribution):
            raise ModelTypeError(
                "VariationalLatentVariable: prior_x must be a Gaussian prior over X (e.g. "
                f"torchgp.priors.NormalPrior(torch.zeros(n, latent_dim), torch.ones(n, latent_dim))); got "
                f"{type(prior_x).__name__}."
            )
        super().__init__(n, latent_dim)
        self.data_dim = data_dim
        self.prior_x = prior_x
        self.q_mu = X_init
        self.q_log_sigma = nn.Parameter(torch.randn(n, latent_dim, dtype=X_init.dtype, device=X_init.device))
        self.register_added_loss_term("x_kl")

    def variational_distribution(self) -> torch.distributions.Normal:
        """:math:`q(\\mathbf X)`, a ``Normal`` of batch shape ``(n, latent_dim)``."""
        return torch.distributions.Normal(self.q_mu, softplus(self.q_log_sigma))

    def forward(self) -> torch.Tensor:
        # the KL term belongs to the objectives' layer; imported here so models never import mlls at load time
        from torchgp.mlls.kl_gaussian_added_loss_term import KLGaussianAddedLossTerm

        q_x = self.variational_distribution()
        # a torchgp prior keeps its parameters as buffers: the KL is taken to the torch distribution they define
        p_x = self.prior_x.distribution() if isinstance(self.prior_x, Prior) else self.prior_x
        self.update_added_loss_term("x_kl", KLGaussianAddedLossTerm(q_x, p_x, self.n, self.data_dim))
        return q_x.rsample()
