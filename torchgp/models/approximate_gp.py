r"""``ApproximateGP``: a GP through a variational strategy (SVGP; Hensman et al. 2013, 2015).

Write ``forward(x)`` returning the prior ``MultivariateNormal(mean(x), kernel(x))``; ``model(x)``
returns ``q(f(x))`` through ``model.variational_strategy`` in train and eval mode alike, so it can
be trained on minibatches with :class:`~torchgp.mlls.VariationalELBO` and any likelihood.
The first training-mode call warns if its inputs' spread is more than 10³ times off a kernel's
lengthscale; eval-mode calls warn about NaN/inf input rows (:mod:`torchgp.models._diagnostics`).
"""

from __future__ import annotations

import torch

from torchgp.errors import ModelTypeError
from torchgp.models._diagnostics import InputScaleWatch, warn_nonfinite_test_rows
from torchgp.models.gp import GP, call_with_hooks
from torchgp.models.pyro._pyro_mixin import _PyroMixin


class ApproximateGP(GP):
    """Variational GP model (GPyTorch's interface).

    Args:
        variational_strategy: e.g. ``VariationalStrategy(self, Z, CholeskyVariationalDistribution(m))``.

    Shapes:
        ``model(x (*batch, b, d))`` → ``MultivariateNormal`` ``(*batch, b)``; ``x`` of shape ``(b,)``
        is read as ``b`` one-dimensional points.

    Example:
        >>> import torch, torchgp
        >>> from torchgp.variational import CholeskyVariationalDistribution, VariationalStrategy
        >>> class SVGP(torchgp.models.ApproximateGP):
        ...     def __init__(self, Z):
        ...         q = CholeskyVariationalDistribution(Z.shape[-2])
        ...         super().__init__(VariationalStrategy(self, Z, q))
        ...         self.mean_module = torchgp.means.ConstantMean()
        ...         self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel())
        ...     def forward(self, x):
        ...         return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))
        >>> SVGP(torch.rand(8, 2))(torch.rand(5, 2)).mean.shape
        torch.Size([5])
    """

    def __init__(self, variational_strategy):
        super().__init__()
        if not hasattr(variational_strategy, "kl_divergence"):
            raise ModelTypeError(
                f"ApproximateGP needs a variational strategy (torchgp.variational.VariationalStrategy); got "
                f"{type(variational_strategy).__name__}."
            )
        self.variational_strategy = variational_strategy

    def forward(self, x: torch.Tensor):
        """The prior ``MultivariateNormal(mean(x), K(x))`` ``(*batch, n)`` for ``x (*batch, n, d)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x) returning the prior MVN.")

    def __call__(self, inputs: torch.Tensor, prior: bool = False, **kwargs):
        """``q(f(inputs))`` (or the prior ``p(f(inputs))`` if ``prior=True``), ``(*batch, b)``.

        Forward pre-hooks and forward hooks registered on the model run around this call (train
        and eval mode) and see ``(inputs,)`` and the returned distribution.
        """
        return call_with_hooks(self, self._q_f, (inputs,), {**kwargs, "prior": True} if prior else kwargs)

    def _q_f(self, inputs: torch.Tensor, prior: bool = False, **kwargs):
        if not torch.is_tensor(inputs):
            raise TypeError(f"ApproximateGP takes a tensor of inputs (*batch, b, d); got {type(inputs).__name__}.")
        if inputs.dim() == 1:
            inputs = inputs.unsqueeze(-1)
        if not self.training:
            warn_nonfinite_test_rows((inputs,), stacklevel=5)
        elif not prior:
            watch = InputScaleWatch.start(self, "checked")  # once: the first minibatch stands for the data
            if watch is not None:
                with watch:
                    return self.variational_strategy(inputs, prior=prior, **kwargs)
        return self.variational_strategy(inputs, prior=prior, **kwargs)

    def get_fantasy_model(self, inputs: torch.Tensor, targets: torch.Tensor, **kwargs):
        """A new exact GP conditioned on ``(inputs, targets)`` by online variational conditioning (Maddox et al. 2021).

        ``q(u)`` becomes pseudo-observations at the inducing points (:mod:`torchgp.models.online_variational`);
        the returned :class:`~torchgp.models.ExactGP` over the ``m`` inducing points and the ``q`` new points
        predicts ``q(f | targets)``. Needs a Gaussian ``self.likelihood`` and ``mean_module`` /
        ``covar_module`` attributes (or ``mean_module=``, ``covar_module=`` keywords).

        Args:
            inputs: ``(*batch, q, d)`` or ``(f, *batch, q, d)``.
            targets: ``(*batch, q)`` or ``(f, *batch, q)`` (a leading fantasy batch gives a batch of models).
            **kwargs: ``mean_module``, ``covar_module``.

        Returns:
            An :class:`~torchgp.models.ExactGP` with ``m + q`` training points, in eval mode.
        """
        from torchgp.models.online_variational import online_fantasy_model

        return online_fantasy_model(self, inputs, targets, **kwargs)

    def pyro_guide(self, input: torch.Tensor, beta: float = 1.0, name_prefix: str = ""):
        """Pyro guide half (``u ~ q(u)``), as :meth:`torchgp.models.pyro._PyroMixin.pyro_guide`; needs pyro-ppl."""
        return _PyroMixin.pyro_guide(self, input, beta=beta, name_prefix=name_prefix)

    def pyro_model(self, input: torch.Tensor, beta: float = 1.0, name_prefix: str = ""):
        """Pyro model half (``u ~ p(u)``), as :meth:`torchgp.models.pyro._PyroMixin.pyro_model`; needs pyro-ppl."""
        return _PyroMixin.pyro_model(self, input, beta=beta, name_prefix=name_prefix)


VariationalGP = ApproximateGP  # GPyTorch's name
