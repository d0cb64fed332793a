r"""The Bayesian GPLVM: a batch of ``D`` variational GPs on shared latent inputs (Titsias & Lawrence 2010).

Subclass it as an :class:`~torchgp.models.ApproximateGP` whose variational strategy has batch shape ``(D,)``
(one GP per output column, inducing points ``(D, m, q)``), and train with
:class:`~torchgp.mlls.VariationalELBO` on the transposed targets:

.. math:: \frac1N\mathcal L = \frac1b\sum_{i\in\text{batch}} \mathbb E_{q(f_{\cdot i})}\log p(y_i \mid f_{\cdot i})
          - \frac1N \mathrm{KL}(q(\mathbf u)\,\|\,p(\mathbf u)) - \frac{1}{nD}\mathrm{KL}(q(\mathbf X)\,\|\,p(\mathbf X))

per output column (the last term is the latent variable's added loss; GPyTorch's normalisation). Each step,
``X = model.sample_latent_variable()`` gives the latent inputs ``(n, q)``; ``model(X[idx])`` gives
``q(f)`` of batch ``(D,)`` over the minibatch and ``-mll(model(X[idx]), Y[idx].T).sum()`` is the loss.
"""

from __future__ import annotations

import torch

from torchgp.errors import ModelTypeError
from torchgp.models.approximate_gp import ApproximateGP
from torchgp.models.gplvm.latent_variable import LatentVariable

__all__ = ["BayesianGPLVM"]


class BayesianGPLVM(ApproximateGP):
    """GPLVM with point, MAP or variational latent inputs, chosen by the kind of ``X``.

    Args:
        X: a :class:`PointLatentVariable`, :class:`MAPLatentVariable` or :class:`VariationalLatentVariable`.
        variational_strategy: the strategy over the inducing points, batch shape ``(D,)``.

    Shapes:
        ``sample_latent_variable()`` → ``(n, latent_dim)``; ``model(x (b, latent_dim))`` →
        ``MultivariateNormal`` ``(D, b)``.

    Example:
        >>> import torch, torchgp
        >>> from torchgp.models.gplvm import BayesianGPLVM, PointLatentVariable
        >>> from torchgp.variational import CholeskyVariationalDistribution, VariationalStrategy
        >>> class GPLVM(BayesianGPLVM):
        ...     def __init__(self, n, D, q, m):
        ...         Z = torch.randn(D, m, q)
        ...         u = CholeskyVariationalDistribution(m, batch_shape=torch.Size([D]))
        ...         super().__init__(PointLatentVariable(n, q, torch.randn(n, q)), VariationalStrategy(self, Z, u))
        ...         self.mean_module = torchgp.means.ZeroMean()
        ...         self.covar_module = torchgp.kernels.RBFKernel(ard_num_dims=q)
        ...     def forward(self, x):
        ...         return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))
        >>> model = GPLVM(n=10, D=3, q=2, m=4)
        >>> model(model.sample_latent_variable()[:5]).mean.shape
        torch.Size([3, 5])
    """

    def __init__(self, X: LatentVariable, variational_strategy):
        if not isinstance(X, torch.nn.Module) or not callable(X):
            raise ModelTypeError(
                "BayesianGPLVM: X must be a latent variable module (PointLatentVariable, MAPLatentVariable or "
                f"VariationalLatentVariable); got {type(X).__name__}."
            )
        super().__init__(variational_strategy)
        self.X = X

    def forward(self, X: torch.Tensor):
        """The prior ``MultivariateNormal(mean(X), K(X))`` ``(D, b)`` for latent inputs ``X (b, latent_dim)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(X) returning the prior MVN.")

    def sample_latent_variable(self, *args, **kwargs) -> torch.Tensor:
        """The latent inputs for this step, ``(n, latent_dim)`` (a fresh draw for a variational ``X``)."""
        return self.X(*args, **kwargs)
