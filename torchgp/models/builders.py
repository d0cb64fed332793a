r"""Models built from parts, without subclassing: :class:`ExactGPModel` and :class:`ApproximateGPModel`.

Each takes a kernel (a torchgp kernel or a string such as ``"rbf + periodic * rbf"``, see
:mod:`torchgp.kernels.parse`) and a mean (a torchgp mean or ``"constant"`` / ``"zero"`` / ``"linear"``).
They are what :mod:`torchgp.sklearn`, the ``torchgp`` command and :func:`torchgp.load` build, and each
states the constructor arguments it is rebuilt from (``_spec`` / ``_from_spec``), so that
:mod:`torchgp.io` needs no knowledge of their insides.
"""

from __future__ import annotations

import torch

from torchgp import kernels as _kernels
from torchgp import likelihoods as _likelihoods
from torchgp import means as _means
from torchgp.distributions import MultitaskMultivariateNormal, MultivariateNormal
from torchgp.errors import InputError, ShapeError
from torchgp.kernels.parse import parse_kernel
from torchgp.models.approximate_gp import ApproximateGP
from torchgp.models.exact_gp import ExactGP

__all__ = [
    "ExactGPModel",
    "ApproximateGPModel",
    "MultitaskExactGPModel",
    "IndependentMultitaskGPModel",
    "HadamardGPModel",
    "make_mean",
]


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


class _KernelMeanSpec:
    """Saving support shared by the exact builders whose constructor is
    ``(train_x, train_y, likelihood, kernel=, mean=)``: what :mod:`torchgp.io` stores and how it rebuilds."""

    def _spec(self) -> dict:
        """Constructor arguments besides the training data (parts as modules)."""
        return {"likelihood": self.likelihood, "kernel": self.covar_module, "mean": self.mean_module}

    @classmethod
    def _from_spec(cls, args: dict, *, train_inputs=None, train_targets=None, state=None):
        """Rebuild from :meth:`_spec`'s arguments and the training data stored beside them."""
        if not train_inputs:
            raise InputError("an exact GP is rebuilt from its training data, and none was given.")
        return cls(train_inputs[0], train_targets, args["likelihood"], kernel=args["kernel"], mean=args["mean"])


class ExactGPModel(_KernelMeanSpec, ExactGP):
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


def _task_count(train_y, name: str) -> int:
    """``t`` of targets ``(*batch, n, t)``, with a clear error for anything else."""
    if not torch.is_tensor(train_y) or train_y.dim() < 2:
        shape = tuple(train_y.shape) if torch.is_tensor(train_y) else type(train_y).__name__
        raise ShapeError(f"{name} needs targets of shape (*batch, n, t), one column per task; got {shape}.")
    return train_y.shape[-1]


def _check_likelihood_tasks(likelihood, t: int, name: str) -> None:
    tasks = getattr(likelihood, "num_tasks", None)
    if tasks is not None and tasks != t:
        raise ShapeError(
            f"{name}: the targets have t = {t} columns (tasks) but the likelihood has num_tasks = {tasks}; "
            f"build it with num_tasks={t}."
        )


class MultitaskExactGPModel(_KernelMeanSpec, ExactGP):
    """Exact multitask GP over ``t`` outputs observed at every input: ICM (``K_x ⊗ B``) or LCM (``Σ_q K_q ⊗ B_q``).

    Its covariance keeps the Kronecker structure, so training and prediction run through
    :mod:`torchgp.linalg.kronecker_solve` (never the ``nt × nt`` matrix) with a rank-0 likelihood.

    Args:
        train_x: ``(*batch, n, d)`` (or ``(n,)``) training inputs.
        train_y: ``(*batch, n, t)`` training targets, one column per task.
        likelihood: default ``MultitaskGaussianLikelihood(num_tasks=t, rank=likelihood_rank)``.
        kernel: the kernel over inputs (a torchgp kernel or kernel string, ARD over d), or a list of them for an
            LCM; a ``MultitaskKernel`` / ``LCMKernel`` is used as it is.
        mean: a torchgp mean or name, the same for every task (a ``MultitaskMean`` is used as it is).
        rank: rank of each task covariance ``B = W Wᵀ + diag(v)``, ``1 ≤ rank ≤ t``.
        likelihood_rank: rank of the task noise covariance of the default likelihood (0: diagonal).

    Shapes:
        eval mode: ``model(X* (*batch, n*, d))`` → ``MultitaskMultivariateNormal`` ``(*batch, n*, t)``.

    Example:
        >>> import torch
        >>> X = torch.linspace(0, 1, 10, dtype=torch.float64)
        >>> Y = torch.stack([X.sin(), X.cos()], -1)
        >>> model = MultitaskExactGPModel(X, Y, kernel="rbf", rank=1).double().eval()
        >>> model(torch.rand(4, 1, dtype=torch.float64)).mean.shape
        torch.Size([4, 2])
    """

    def __init__(self, train_x, train_y, likelihood=None, kernel="rbf", mean="constant", rank=1, likelihood_rank=0):
        t = _task_count(train_y, "MultitaskExactGPModel")
        x = train_x.unsqueeze(-1) if train_x.dim() == 1 else train_x
        if likelihood is None:
            likelihood = _likelihoods.MultitaskGaussianLikelihood(num_tasks=t, rank=likelihood_rank)
        _check_likelihood_tasks(likelihood, t, "MultitaskExactGPModel")
        super().__init__(train_x, train_y, likelihood)
        d = x.shape[-1]
        if isinstance(kernel, (_kernels.MultitaskKernel, _kernels.LCMKernel)):
            covar = kernel
        elif isinstance(kernel, (list, tuple)):
            covar = _kernels.LCMKernel([parse_kernel(k, ard_num_dims=d) for k in kernel], num_tasks=t, rank=rank)
        else:
            covar = _kernels.MultitaskKernel(parse_kernel(kernel, ard_num_dims=d), num_tasks=t, rank=rank)
        if covar.num_tasks != t:
            raise ShapeError(f"MultitaskExactGPModel: the kernel has num_tasks = {covar.num_tasks}; the targets {t}.")
        self.covar_module = covar
        if isinstance(mean, _means.MultitaskMean):
            self.mean_module = mean
        else:
            self.mean_module = _means.MultitaskMean(make_mean(mean, d), num_tasks=t)

    def forward(self, x):
        """The prior ``MultitaskMultivariateNormal`` ``(*batch, n, t)`` for ``x (*batch, n, d)``."""
        return MultitaskMultivariateNormal(self.mean_module(x), self.covar_module(x))


class IndependentMultitaskGPModel(_KernelMeanSpec, ExactGP):
    """``t`` independent exact GPs, one per output, as one batch (GPyTorch's batch-independent multi-output model).

    Args:
        train_x: ``(n, d)`` (or ``(n,)``) training inputs, shared by the outputs.
        train_y: ``(n, t)`` training targets.
        likelihood: default ``MultitaskGaussianLikelihood(num_tasks=t, has_global_noise=False)`` (one noise per
            output).
        kernel: a torchgp kernel with ``batch_shape == (t,)`` or a kernel string (ARD over d, batch ``(t,)``).
        mean: a torchgp mean with batch ``(t,)`` or a name.

    Shapes:
        eval mode: ``model(X* (n*, d))`` → ``MultitaskMultivariateNormal`` ``(n*, t)``, its covariance
        block-interleaved (one block per output, rows point-major, as GPyTorch's ``from_batch_mvn``).
    """

    def __init__(self, train_x, train_y, likelihood=None, kernel="rbf", mean="constant"):
        t = _task_count(train_y, "IndependentMultitaskGPModel")
        x = train_x.unsqueeze(-1) if train_x.dim() == 1 else train_x
        if likelihood is None:
            likelihood = _likelihoods.MultitaskGaussianLikelihood(num_tasks=t, has_global_noise=False)
        _check_likelihood_tasks(likelihood, t, "IndependentMultitaskGPModel")
        super().__init__(train_x, train_y, likelihood)
        batch = torch.Size([t])
        self.mean_module = make_mean(mean, x.shape[-1], batch)
        self.covar_module = parse_kernel(kernel, ard_num_dims=x.shape[-1], batch_shape=batch)
        if tuple(self.covar_module.batch_shape) != (t,):
            raise ShapeError(
                f"IndependentMultitaskGPModel: the kernel needs batch_shape ({t},), one per output; got "
                f"{tuple(self.covar_module.batch_shape)}."
            )

    def forward(self, x):
        """The prior over ``t`` independent outputs, ``MultitaskMultivariateNormal`` ``(n, t)``, for ``x (n, d)``."""
        mvn = MultivariateNormal(self.mean_module(x), self.covar_module(x))
        return MultitaskMultivariateNormal.from_batch_mvn(mvn)


class HadamardGPModel(ExactGP):
    """Exact multitask GP with one task per observation: ``k((x, i), (x', i')) = k_x(x, x') B[i, i']`` (Hadamard form).

    Args:
        train_x: ``(n, d)`` (or ``(n,)``) inputs.
        train_i: ``(n,)`` or ``(n, 1)`` integer task indices in ``[0, num_tasks)``.
        train_y: ``(n,)`` targets.
        num_tasks: t.
        likelihood: default ``HadamardGaussianLikelihood(num_tasks)`` (one noise per task).
        kernel: the kernel over inputs (torchgp kernel or string, ARD over d).
        mean: a torchgp mean or name.
        rank: rank of ``B = W Wᵀ + diag(v)``; a given ``task_kernel`` (an ``IndexKernel``) is used as it is.

    Shapes:
        eval mode: ``model(X* (n*, d), i* (n*, 1))`` → ``MultivariateNormal`` ``(n*)``.
    """

    def __init__(
        self, train_x, train_i, train_y, num_tasks, likelihood=None, kernel="rbf", mean="constant", rank=1,
        task_kernel=None,
    ):  # fmt: skip
        x = train_x.unsqueeze(-1) if train_x.dim() == 1 else train_x
        i = train_i.unsqueeze(-1) if train_i.dim() == 1 else train_i
        if likelihood is None:
            likelihood = _likelihoods.HadamardGaussianLikelihood(num_tasks=num_tasks)
        _check_likelihood_tasks(likelihood, num_tasks, "HadamardGPModel")
        super().__init__((x, i), train_y, likelihood)
        self.num_tasks = num_tasks
        self.mean_module = make_mean(mean, x.shape[-1])
        self.covar_module = parse_kernel(kernel, ard_num_dims=x.shape[-1])
        if task_kernel is None:
            task_kernel = _kernels.IndexKernel(num_tasks=num_tasks, rank=rank)
        self.task_covar_module = task_kernel

    def forward(self, x, i):
        """The prior ``MultivariateNormal`` ``(n)`` at inputs ``x (n, d)`` with task indices ``i (n, 1)``."""
        covar = self.covar_module(x).mul(self.task_covar_module(i))
        return MultivariateNormal(self.mean_module(x), covar)

    def _spec(self) -> dict:
        return {
            "num_tasks": int(self.num_tasks),
            "likelihood": self.likelihood,
            "kernel": self.covar_module,
            "mean": self.mean_module,
            "task_kernel": self.task_covar_module,
        }

    @classmethod
    def _from_spec(cls, args: dict, *, train_inputs=None, train_targets=None, state=None):
        if not train_inputs or len(train_inputs) != 2:
            raise InputError("a Hadamard GP is rebuilt from its inputs and task indices, and they were not given.")
        x, i = train_inputs
        return cls(
            x, i, train_targets, args["num_tasks"], args["likelihood"], kernel=args["kernel"], mean=args["mean"],
            task_kernel=args["task_kernel"],
        )  # fmt: skip
