r"""Deep GPs by doubly stochastic variational inference (Salimbeni & Deisenroth 2017).

A layer of ``h = output_dims`` independent GPs maps ``d = input_dims`` inputs to ``h`` outputs; it is
an :class:`~torchgp.models.ApproximateGP` whose variational strategy has ``batch_shape = (h,)``.
Layer ``ℓ`` is fed samples of layer ``ℓ - 1``:

.. math:: f^{(\ell)}_s(x) \sim q\big(f^{(\ell)} \mid f^{(\ell-1)}_s(x)\big),\qquad s = 1, \dots, S

(Salimbeni & Deisenroth 2017, eq. 11), each draw from the per-point marginals by the
reparameterisation ``f = μ + σ ε`` (their eq. 13), with ``S = settings.num_likelihood_samples``.
The bound on ``log p(y)`` averages the likelihood term over the ``S`` samples and subtracts the sum
of every layer's KL (their eq. 12); :class:`~torchgp.mlls.DeepApproximateMLL` computes it.
"""

from __future__ import annotations

import warnings

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.distributions import MultitaskMultivariateNormal, MultivariateNormal
from torchgp.errors import ModelTypeError, ShapeError
from torchgp.likelihoods import Likelihood
from torchgp.linalg.operators.base import Operator
from torchgp.models.approximate_gp import ApproximateGP
from torchgp.models.gp import GP


class _ExpandedOperator(Operator):
    """``base`` ``(*b, n, n)`` seen as ``(*batch, n, n)`` (broadcast, no copy): diagonal and products stay lazy.

    The ``S`` copies of a layer's output at deterministic inputs share one covariance; expanding it
    this way keeps the next layer's O(S n) read of the variances from forming ``S`` dense ``n × n`` matrices.
    """

    def __init__(self, base: Operator, batch_shape: torch.Size):
        self.base = base
        self.shape = torch.Size([*batch_shape, *base.shape[-2:]])
        self.dtype, self.device = base.dtype, base.device

    def _dense(self):
        return self.base.to_dense().expand(self.shape)

    def _tensors(self):
        return self.base._tensors()

    def _map(self, fn):
        return _ExpandedOperator(self.base._map(fn), self.batch_shape)

    def _expand(self, batch_shape):
        return _ExpandedOperator(self.base, batch_shape)

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)
        return self.base.diagonal().expand(self.shape[:-1])

    def _matmul(self, rhs):
        out = self.base.matmul(rhs)
        return out.expand(*broadcast_shapes(self.batch_shape, out.shape[:-2]), *out.shape[-2:])


def _expand_samples(output: MultivariateNormal, num: int) -> MultivariateNormal:
    """``num`` copies of ``output`` along a new leading batch dimension: batch ``(num, *batch)``."""
    batch = torch.Size([num, *output.batch_shape])
    cov = _ExpandedOperator(output.lazy_covariance_matrix, batch)
    if isinstance(output, MultitaskMultivariateNormal):
        mean = output.mean.expand(*batch, *output.mean.shape[-2:])
        return MultitaskMultivariateNormal(mean, cov, interleaved=output._interleaved)
    return MultivariateNormal(output.mean.expand(*batch, output.mean.shape[-1]), cov)


class _DeepGPVariationalStrategy:
    """The KL of a deep GP: the sum over its layers (Salimbeni & Deisenroth 2017, eq. 12).

    Not a module: it holds a reference to the model and reads its layers at each call, so a layer
    added after construction is counted.
    """

    def __init__(self, model):
        self.model = model

    @property
    def sub_variational_strategies(self) -> list:
        """The variational strategy of every :class:`~torchgp.models.ApproximateGP` inside the model."""
        return [m.variational_strategy for m in self.model.modules() if isinstance(m, ApproximateGP)]

    def kl_divergence(self) -> torch.Tensor:
        """``Σ_ℓ Σ_h KL(q(u_h^{(ℓ)}) || p(u_h^{(ℓ)}))``, a scalar."""
        terms = [s.kl_divergence().sum() for s in self.sub_variational_strategies]
        if not terms:
            raise ModelTypeError(
                f"{type(self.model).__name__} has no DeepGPLayer (no ApproximateGP submodule); assign the layers "
                "as attributes in __init__ (self.hidden = MyLayer(...))."
            )
        return sum(terms[1:], terms[0])


class DeepGPLayer(ApproximateGP):
    """One layer of a deep GP: ``output_dims`` independent GPs of ``input_dims`` inputs (GPyTorch's interface).

    Build the variational strategy with ``batch_shape = (output_dims,)`` (inducing points
    ``(output_dims, m, input_dims)``, ``CholeskyVariationalDistribution(m, batch_shape=(output_dims,))``)
    and a batched mean and kernel; ``forward(x)`` returns the prior MVN ``(*batch, output_dims, n)``.

    Args:
        variational_strategy: the strategy ``q(u) → q(f)`` of the layer's GPs.
        input_dims: ``d``, the number of features the layer takes.
        output_dims: ``h``, the number of GPs (the layer's output features), or ``None`` for one GP
            whose output is a plain MultivariateNormal (the last layer of a single-output model).

    Shapes:
        ``layer(x)`` for ``x (*batch, n, d)`` (deterministic inputs) →
        ``MultitaskMultivariateNormal`` with batch ``(S, *batch)`` and event ``(n, h)``, ``S =
        settings.num_likelihood_samples``; ``layer(samples, are_samples=True)`` for samples
        ``(S, *batch, n, d)`` → batch ``(S, *batch)``, event ``(n, h)``; a ``MultitaskMultivariateNormal``
        input (the previous layer's output) is sampled once from its marginals → same as
        ``are_samples=True``. With ``output_dims=None`` the output is a ``MultivariateNormal`` ``(S, *batch, n)``.
    """

    def __init__(self, variational_strategy, input_dims: int, output_dims: int | None):
        super().__init__(variational_strategy)
        self.input_dims = input_dims
        self.output_dims = output_dims

    def forward(self, x: torch.Tensor):
        """The prior MVN ``(*batch, output_dims, n)`` for ``x (*batch, output_dims, n, input_dims)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x) returning the prior MVN.")

    def __call__(self, inputs, are_samples: bool = False, **kwargs):
        """The layer's marginals ``q(f(inputs))``; see the class docstring for shapes."""
        deterministic_inputs = not are_samples
        if isinstance(inputs, MultitaskMultivariateNormal):
            # Salimbeni & Deisenroth 2017, eq. 13: one reparameterised draw per sample from the marginals.
            inputs = torch.distributions.Normal(inputs.mean, inputs.variance.sqrt()).rsample()
            deterministic_inputs = False
        output = self._marginals(inputs, **kwargs)
        if deterministic_inputs:
            output = _expand_samples(output, settings.num_likelihood_samples.value())
        return output

    def _marginals(self, inputs, **kwargs):
        """``q(f(x))`` of the layer's GPs at ``x (*batch, n, input_dims)``: multitask ``(*batch, n, h)``.

        With ``output_dims=None``, the single GP's ``MultivariateNormal`` ``(*batch, n)``.
        """
        if not torch.is_tensor(inputs):
            raise TypeError(
                f"{type(self).__name__} takes a tensor (*batch, n, d) or the previous layer's "
                f"MultitaskMultivariateNormal; got {type(inputs).__name__}."
            )
        if inputs.dim() == 1:
            inputs = inputs.unsqueeze(-1)
        if inputs.shape[-1] != self.input_dims:
            raise ShapeError(
                f"{type(self).__name__} was built with input_dims = {self.input_dims} but the inputs have "
                f"{inputs.shape[-1]} features (shape {tuple(inputs.shape)}); build the layer with "
                f"input_dims={inputs.shape[-1]} or feed it the previous layer's output."
            )
        if self.output_dims is not None:  # one copy of the inputs per output GP: (*batch, h, n, d)
            inputs = inputs.unsqueeze(-3).expand(*inputs.shape[:-2], self.output_dims, *inputs.shape[-2:])
        output = ApproximateGP.__call__(self, inputs, **kwargs)
        if self.output_dims is not None:  # batch (*batch, h) of MVNs (n) → independent tasks (*batch, n, h)
            output = MultitaskMultivariateNormal.from_batch_mvn(output, task_dim=-1)
        return output


class DeepGP(GP):
    """A container of :class:`DeepGPLayer` modules (and any other modules): a deep GP (GPyTorch's interface).

    Write ``forward(x)`` chaining the layers, ``self.last(self.hidden(x))``; ``model(x)`` runs it.
    ``model.variational_strategy.kl_divergence()`` is the sum of every layer's KL, which the
    variational objectives (wrapped in :class:`~torchgp.mlls.DeepApproximateMLL`) subtract.

    Shapes:
        ``model(x (*batch, n, d))`` → the last layer's output, batch ``(S, *batch)``.
    """

    def __init__(self):
        super().__init__()
        self.variational_strategy = _DeepGPVariationalStrategy(self)

    def forward(self, x: torch.Tensor):
        """The last layer's output for inputs ``x (*batch, n, d)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x) chaining its layers.")


class DeepLikelihood(Likelihood):
    """A likelihood averaged over the deep GP's samples (GPyTorch's deprecated wrapper).

    Prefer a plain likelihood with :class:`~torchgp.mlls.DeepApproximateMLL`, which averages the same way.

    Args:
        base_likelihood: the likelihood ``p(y | f)``.

    Shapes:
        ``expected_log_prob(y (*batch, n), q(f) (S, *batch, n))`` → ``(*batch, n)``, the mean over ``S``.
    """

    def __init__(self, base_likelihood):
        super().__init__()
        warnings.warn(
            "DeepLikelihood is deprecated: use the likelihood itself with torchgp.mlls.DeepApproximateMLL "
            "(DeepApproximateMLL(VariationalELBO(likelihood, model, num_data))).",
            DeprecationWarning,
            stacklevel=2,
        )
        self.base_likelihood = base_likelihood

    def expected_log_prob(self, observations, function_dist, *args, **kwargs):
        """``(1/S) Σ_s E_{q(f_s)}[log p(y | f_s)]`` per point, ``(*batch, n)``."""
        return self.base_likelihood.expected_log_prob(observations, function_dist, *args, **kwargs).mean(0)

    def log_marginal(self, observations, function_dist, *args, **kwargs):
        """``(1/S) Σ_s log E_{q(f_s)}[p(y | f_s)]`` per point, ``(*batch, n)``."""
        return self.base_likelihood.log_marginal(observations, function_dist, *args, **kwargs).mean(0)

    def forward(self, function_samples, *args, **kwargs):
        """The base likelihood's ``p(y | f)``."""
        return self.base_likelihood.forward(function_samples, *args, **kwargs)

    def __call__(self, *args, **kwargs):
        return self.base_likelihood(*args, **kwargs)
