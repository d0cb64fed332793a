r"""Models built from parts, without subclassing: :class:`ExactGPModel` and :class:`ApproximateGPModel`.

Each takes a kernel (a torchgp kernel or a string such as ``"rbf + periodic * rbf"``, see
:mod:`torchgp.kernels.parse`) and a mean (a torchgp mean or ``"constant"`` / ``"zero"`` / ``"linear"``).
They are what :mod:`torchgp.sklearn`, the ``torchgp`` command and :func:`torchgp.load` build, and each
states the constructor arguments it is rebuilt from (``_spec`` / ``_from_spec``), so that
:mod:`torchgp.io` needs no knowledge of their insides.
"""

from __future__ import annotations

import torch

from torchgp import likelihoods as _likelihoods
from torchgp import means as _means
from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError
from torchgp.kernels.parse import parse_kernel
from torchgp.models.approximate_gp import ApproximateGP
from torchgp.models.exact_gp import ExactGP

__all__ = ["ExactGPModel", "ApproximateGPModel", "make_mean"]


def make_mean(mean, d: int, batch_shape: torch.Size = torch.Size([])):
    """A mean module from a torchgp mean (returned as is) or a name.

    Args:
        mean: a torchgp ``Mean``, or ``"constant"`` (learned constant), ``"zero"``, ``"linear"``.
        d: number of input dimensions (for ``"linear"``).
        batch_shape: batch of independent means.

    Raises:
        InputError: an unknown name.
    """
    if isinstance(mean, torch.nn.Module):
        return mean
    makers = {
        "constant": lambda: _means.ConstantMean(batch_shape=batch_shape),
        "zero": lambda: _means.ZeroMean(batch_shape=batch_shape),
        "linear": lambda: _means.LinearMean(d, batch_shape=batch_shape),
    }
    if mean not in makers:
        raise InputError(f"mean must be a torchgp Mean or one of {sorted(makers)}; got {mean!r}.")
    return makers[mean]()


class ExactGPModel(ExactGP):
    """Exact GP regression from a mean, a kernel and a Gaussian likelihood (no subclassing needed).

    Args:
        train_x: ``(*batch, n, d)`` (or ``(n,)``) training inputs.
        train_y: ``(*batch, n)`` training targets.
        likelihood: a Gaussian likelihood (default ``GaussianLikelihood(batch_shape=batch)``).
        kernel: a torchgp kernel or a kernel string (``"rbf + periodic"``, see :mod:`torchgp.kernels.parse`);
            strings get ARD lengthscales for the d input dimensions.
        mean: a torchgp mean, or ``"constant"`` / ``"zero"`` / ``"linear"``.
        batch_shape: batch of independent GPs (default: the leading dims of ``train_x``).

    Shapes:
        eval mode: ``model(X* (*batch, t, d))`` → ``MultivariateNormal`` ``(*batch, t)``.

    Example:
        >>> import torch
        >>> X = torch.linspace(0, 1, 10, dtype=torch.float64)
        >>> model = ExactGPModel(X, torch.sin(6 * X), kernel="matern52").double().eval()
        >>> model(torch.tensor([0.5], dtype=torch.float64)).mean.shape
        torch.Size([1])
    """

    def __init__(self, train_x, train_y, likelihood=None, kernel="rbf", mean="constant", batch_shape=None):
        x = train_x.unsqueeze(-1) if train_x.dim() == 1 else train_x
        batch = torch.Size(x.shape[:-2] if batch_shape is None else batch_shape)
        if likelihood is None:
            likelihood = _likelihoods.GaussianLikelihood(batch_shape=batch)
        super().__init__(train_x, train_y, likelihood)
        self.mean_module = make_mean(mean, x.shape[-1], batch)
        self.covar_module = parse_kernel(kernel, ard_num_dims=x.shape[-1], batch_shape=batch)

    def forward(self, x):
        """The prior ``MultivariateNormal(m(x), K(x))`` ``(*batch, n)`` for ``x (*batch, n, d)``."""
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def _spec(self) -> dict:
        """Constructor arguments besides the training data (parts as modules)."""
        return {"likelihood": self.likelihood, "kernel": self.covar_module, "mean": self.mean_module}

    @classmethod
    def _from_spec(cls, args: dict, *, train_inputs=None, train_targets=None, state=None):
        """Rebuild from :meth:`_spec`'s arguments and the training data stored beside them."""
        if not train_inputs:
            raise InputError("an exact GP is rebuilt from its training data, and none was given.")
        return cls(train_inputs[0], train_targets, args["likelihood"], kernel=args["kernel"], mean=args["mean"])


class ApproximateGPModel(ApproximateGP):
    """SVGP (Hensman et al. 2015) from inducing points, a kernel and a mean.

    The variational distribution is a full-covariance ``CholeskyVariationalDistribution`` over the
    inducing values, behind a whitened ``VariationalStrategy`` (both from :mod:`torchgp.variational`,
    imported when a model is built).

    Args:
        inducing_points: ``Z (*batch, m, d)`` (or ``(m,)``).
        kernel: a torchgp kernel or kernel string (ARD over d).
        mean: a torchgp mean or ``"constant"`` / ``"zero"`` / ``"linear"``.
        learn_inducing_locations: whether Z is trained.

    Shapes:
        ``model(X (*batch, n, d))`` → ``MultivariateNormal`` ``(*batch, n)`` (the approximate posterior q(f)).

    Example:
        >>> import torch
        >>> model = ApproximateGPModel(torch.rand(8, 2), kernel="rbf")
        >>> model(torch.rand(5, 2)).mean.shape
        torch.Size([5])
    """

    def __init__(self, inducing_points, kernel="rbf", mean="constant", learn_inducing_locations=True):
        from torchgp.variational import CholeskyVariationalDistribution, VariationalStrategy

        Z = inducing_points.unsqueeze(-1) if inducing_points.dim() == 1 else inducing_points
        batch = Z.shape[:-2]
        q = CholeskyVariationalDistribution(Z.shape[-2], batch_shape=batch)
        strategy = VariationalStrategy(self, Z, q, learn_inducing_locations=learn_inducing_locations)
        super().__init__(strategy)
        self.mean_module = make_mean(mean, Z.shape[-1], batch)
        self.covar_module = parse_kernel(kernel, ard_num_dims=Z.shape[-1], batch_shape=batch)

    def forward(self, x):
        """The prior ``MultivariateNormal(m(x), K(x))`` ``(*batch, n)`` for ``x (*batch, n, d)``."""
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def _spec(self) -> dict:
        """Constructor arguments besides the inducing points (which are stored as a parameter)."""
        strategy = self.variational_strategy
        return {
            "kernel": self.covar_module,
            "mean": self.mean_module,
            "learn_inducing_locations": bool(strategy.inducing_points.requires_grad),
            "num_inducing": int(strategy.inducing_points.shape[-2]),
        }

    @classmethod
    def _from_spec(cls, args: dict, *, train_inputs=None, train_targets=None, state=None):
        """Rebuild from :meth:`_spec`'s arguments; the inducing points come from the stored state."""
        Z = (state or {}).get("variational_strategy.inducing_points")
        if Z is None:
            raise InputError("a variational GP is rebuilt from its inducing points, and none were stored.")
        return cls(
            Z.clone(),
            kernel=args["kernel"],
            mean=args["mean"],
            learn_inducing_locations=args.get("learn_inducing_locations", True),
        )
