r"""``PyroGP``: an approximate GP trained with Pyro's inference (``pyro.infer.SVI``) instead of an MLL object.

``model.model(x, y)`` and ``model.guide(x, y)`` are a Pyro model and guide: the GP's ``u`` site
(:class:`~torchgp.models.pyro._PyroMixin`), then the likelihood's ``f`` and ``y`` sites
(:meth:`torchgp.likelihoods.Likelihood.pyro_model`). With ``pyro.infer.Trace_ELBO`` the loss is a Monte
Carlo estimate of minus the SVGP evidence lower bound of the whole data set (Hensman et al. 2015, eq. 6),

.. math:: -\Big(\tfrac{N}{b} \sum_{i \in \text{batch}} \mathbb E_{q(f_i)}[\log p(y_i \mid f_i)]
          - \beta\, \mathrm{KL}(q(u) \,\|\, p(u))\Big),

i.e. ``N`` times :class:`~torchgp.mlls.VariationalELBO`'s per-point value. Needs ``pyro-ppl``.
"""

from __future__ import annotations

import torch

from torchgp.models.gp import GP
from torchgp.models.pyro._pyro_mixin import _PyroMixin


class PyroGP(GP, _PyroMixin):
    """A variational GP whose parameters Pyro learns (GPyTorch's ``PyroGP``).

    Args:
        variational_strategy: e.g. ``VariationalStrategy(self, Z, CholeskyVariationalDistribution(m))``.
        likelihood: the likelihood; it gets ``num_data`` and ``name_prefix`` from here.
        num_data: ``N``, the number of training points (the minibatch's log-likelihood is scaled by ``N/b``).
        name_prefix: prefix of the Pyro sample and plate sites (give each model in one Pyro program its own).
        beta: weight of the KL term (1 is variational inference).

    Shapes:
        ``model(x (*batch, b, d))`` → ``MultivariateNormal`` ``(*batch, b)``, as ``ApproximateGP``.

    Example:
        >>> import pyro, torch, torchgp
        >>> from torchgp.variational import CholeskyVariationalDistribution, VariationalStrategy
        >>> class GPModel(torchgp.models.PyroGP):
        ...     def __init__(self, Z, likelihood, num_data):
        ...         strategy = VariationalStrategy(self, Z, CholeskyVariationalDistribution(Z.shape[-2]))
        ...         super().__init__(strategy, likelihood, num_data, name_prefix="gp")
        ...         self.mean_module = torchgp.means.ConstantMean()
        ...         self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel())
        ...     def forward(self, x):
        ...         return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))
        >>> X, y = torch.rand(20, 1), torch.rand(20)
        >>> model = GPModel(X[:5], torchgp.likelihoods.GaussianLikelihood(), num_data=20)
        >>> svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.Trace_ELBO())
        >>> loss = svi.step(X, y)
    """

    def __init__(self, variational_strategy, likelihood, num_data: int, name_prefix: str = "", beta: float = 1.0):
        super().__init__()
        self.variational_strategy = variational_strategy
        self.name_prefix = name_prefix
        self.likelihood = likelihood
        self.num_data = num_data
        self.beta = beta
        self.likelihood.num_data = num_data
        self.likelihood.name_prefix = name_prefix

    def guide(self, input: torch.Tensor, target: torch.Tensor, *args, **kwargs):
        """Pyro guide: ``q(u)``, then the likelihood's guide (``f ~ q(f)`` per point).

        Args:
            input: ``(*batch, b, d)``; target: ``(*batch, b)``; further arguments go to the likelihood.
        """
        function_dist = self.pyro_guide(input, beta=self.beta, name_prefix=self.name_prefix)
        return self.likelihood.pyro_guide(function_dist, target, *args, **kwargs)

    def model(self, input: torch.Tensor, target: torch.Tensor, *args, **kwargs):
        """Pyro model: registers this module's parameters with ``pyro.module``, ``p(u)``, then ``y`` given ``f``.

        Args:
            input: ``(*batch, b, d)``; target: ``(*batch, b)``; further arguments go to the likelihood.

        Returns:
            the observed ``y`` site's value.
        """
        from torchgp import _pyro

        _pyro.pyro.module(self.name_prefix + ".gp", self)
        function_dist = self.pyro_model(input, beta=self.beta, name_prefix=self.name_prefix)
        return self.likelihood.pyro_model(function_dist, target, *args, **kwargs)

    def __call__(self, inputs: torch.Tensor, prior: bool = False):
        """``q(f(inputs))`` (or ``p(f(inputs))`` if ``prior=True``), ``(*batch, b)``; ``(b,)`` is read as ``(b, 1)``."""
        if inputs.dim() == 1:
            inputs = inputs.unsqueeze(-1)
        return self.variational_strategy(inputs, prior=prior)
