"""The ``Kernel`` base class: everything except the maths.

A kernel subclass writes ``forward(x1, x2)`` returning the ``(*batch, n, m)`` covariance; the
base class handles 1-D inputs, ``active_dims``, ``diag=True`` (without forming the full matrix),
``last_dim_is_batch``, batch shapes, shape errors, laziness (``kernel(X)`` returns a
:class:`~torchgp.linalg.KernelOperator` that is evaluated only when needed), and sums and
products (``k1 + k2``, ``k1 * k2``).
"""

from __future__ import annotations

import inspect
from functools import cache

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.constraints import Positive
from torchgp.errors import ShapeError
from torchgp.kernels.distance import dist, sq_dist
from torchgp.linalg.operators import KernelOperator
from torchgp.module import Module


@cache
def _forward_accepts(cls) -> tuple[bool, bool, bool]:
    """(accepts diag, handles last_dim_is_batch, accepts **params) for ``cls.forward``.

    ``last_dim_is_batch`` counts as handled only when ``forward`` names it: a forward taking
    ``**params`` would silently ignore it, so the base class reshapes the inputs instead.
    """
    sig = inspect.signature(cls.forward)
    names = sig.parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in names.values())
    return "diag" in names or var_kw, "last_dim_is_batch" in names, var_kw


@cache
def _names_diag(cls) -> bool:
    """Whether ``cls.forward`` names ``diag`` (else it may get it through ``**params`` and ignore it)."""
    return "diag" in inspect.signature(cls.forward).parameters


def as_inputs(x, name: str) -> torch.Tensor:
    """Inputs as ``(*batch, n, d)``: a 1-D tensor of n points becomes ``(n, 1)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (*batch, n, d); got {type(x).__name__}.")
    if x.dim() == 0:
        raise ShapeError(f"{name} must have shape (n,) or (*batch, n, d); got a scalar.")
    return x.unsqueeze(-1) if x.dim() == 1 else x


class Kernel(Module):
    """Base covariance function.

    Args:
        ard_num_dims: one lengthscale per input dimension if set, else one shared lengthscale.
        batch_shape: batch of independent kernels (hyperparameters get this leading shape).
        active_dims: indices of the input columns this kernel sees (default: all).
        lengthscale_prior: prior on the lengthscale (kernels with ``has_lengthscale``).
        lengthscale_constraint: constraint on the lengthscale (default ``Positive()``).
        eps: accepted for GPyTorch compatibility.

    Shapes:
        ``kernel(x1 (*batch, n, d), x2 (*batch, m, d))`` → lazy ``(*batch, n, m)``;
        ``kernel(x1, x2, diag=True)`` → ``(*batch, n)``.

    Example:
        >>> import torch, torchgp
        >>> class Exp(torchgp.kernels.Kernel):
        ...     def forward(self, x1, x2):
        ...         return torch.exp(-torch.cdist(x1, x2))
        >>> Exp()(torch.zeros(3, 1)).to_dense()
        tensor([[1., 1., 1.],
                [1., 1., 1.],
                [1., 1., 1.]])
    """

    has_lengthscale = False
    is_stationary = False

    def __init__(
        self,
        ard_num_dims: int | None = None,
        batch_shape: torch.Size = torch.Size([]),
        active_dims=None,
        lengthscale_prior=None,
        lengthscale_constraint=None,
        eps: float = 1e-6,
        **kwargs,
    ):
        super().__init__()
        self._batch_shape = torch.Size(batch_shape)
        if active_dims is not None:
            active_dims = torch.as_tensor(active_dims, dtype=torch.long).reshape(-1)
            if ard_num_dims is not None and ard_num_dims != active_dims.numel():
                raise ShapeError(
                    f"ard_num_dims={ard_num_dims} but active_dims has {active_dims.numel()} entries; they must match."
                )
        self.register_buffer("active_dims", active_dims)
        self.ard_num_dims = ard_num_dims
        self.eps = eps
        if self.has_lengthscale:
            d = 1 if ard_num_dims is None else ard_num_dims
            constraint = Positive() if lengthscale_constraint is None else lengthscale_constraint
            init = constraint.transform(torch.zeros(*self._batch_shape, 1, d))
            self.register_constrained("lengthscale", init, constraint, prior=lengthscale_prior)

    # ------------------------------------------------------------------ shapes
    @property
    def batch_shape(self) -> torch.Size:
        return self._batch_shape

    @batch_shape.setter
    def batch_shape(self, value):
        self._batch_shape = torch.Size(value)

    def output_shape(self, x1, x2, last_dim_is_batch: bool = False, **params) -> torch.Size:
        """Shape of ``k(x1, x2)``: ``(*broadcast batch, n, m)``."""
        batch = broadcast_shapes(x1.shape[:-2], x2.shape[:-2], self.batch_shape)
        if last_dim_is_batch:
            d = x1.shape[-1] if self.active_dims is None else self.active_dims.numel()
            batch = torch.Size([*batch, d])
        return torch.Size([*batch, x1.shape[-2], x2.shape[-2]])

    # ------------------------------------------------------------------ calling
    def __call__(self, x1, x2=None, diag: bool = False, last_dim_is_batch: bool = False, **params):
        """Covariance between ``x1 (*batch, n, d)`` and ``x2 (*batch, m, d)`` (default ``x2 = x1``).

        Returns a lazy :class:`~torchgp.linalg.KernelOperator` ``(*batch, n, m)`` (``.to_dense()``
        evaluates it), or the ``(*batch, n)`` diagonal when ``diag=True``.
        """
        x1 = as_inputs(x1, "x1")
        x2 = x1 if x2 is None else as_inputs(x2, "x2")
        if x1.shape[-1] != x2.shape[-1]:
            raise ShapeError(
                f"{type(self).__name__}: x1 has {x1.shape[-1]} features but x2 has {x2.shape[-1]} "
                f"(shapes {tuple(x1.shape)} and {tuple(x2.shape)}); both need shape (*batch, n, d) with the same d."
            )
        self._check_dims(x1)
        if diag:
            if x1.shape[-2] != x2.shape[-2]:
                raise ShapeError(
                    f"diag=True needs as many points in x1 as in x2; got {x1.shape[-2]} and {x2.shape[-2]}."
                )
            return self.evaluate_block(x1, x2, diag=True, last_dim_is_batch=last_dim_is_batch, **params)
        if settings.lazily_evaluate_kernels.on():
            return KernelOperator(self, x1, x2, last_dim_is_batch=last_dim_is_batch, **params)
        return self.evaluate_block(x1, x2, last_dim_is_batch=last_dim_is_batch, **params)

    def _check_dims(self, x):
        d = x.shape[-1]
        if self.active_dims is not None:
            if self.active_dims.numel() and int(self.active_dims.max()) >= d:
                raise ShapeError(
                    f"{type(self).__name__}: active_dims {self.active_dims.tolist()} refer to column "
                    f"{int(self.active_dims.max())} but the inputs have only {d} columns."
                )
            d = self.active_dims.numel()
        if self.ard_num_dims is not None and self.ard_num_dims != d:
            raise ShapeError(
                f"{type(self).__name__} was built with ard_num_dims={self.ard_num_dims} but receives inputs "
                f"with {d} features (shape {tuple(x.shape)}). Build it with ard_num_dims={d}, or select "
                "columns with active_dims."
            )
        for child in self.children():
            if isinstance(child, Kernel):
                child._check_dims(x)

    def evaluate_block(self, x1, x2, diag: bool = False, last_dim_is_batch: bool = False, **params) -> torch.Tensor:
        """Dense ``k(x1, x2)`` (``(*batch, n, m)``, or ``(*batch, n)`` if ``diag``), differentiable.

        Applies ``active_dims`` and ``last_dim_is_batch`` and calls ``forward`` with only the
        arguments it accepts. Composite kernels call this on their parts.
        """
        same = x1 is x2
        if self.active_dims is not None:
            x1 = x1.index_select(-1, self.active_dims)
            x2 = x1 if same else x2.index_select(-1, self.active_dims)
        takes_diag, takes_ldb, takes_kw = _forward_accepts(type(self))
        if last_dim_is_batch and not takes_ldb:
            if self.ard_num_dims is not None and self.ard_num_dims > 1:
                raise ShapeError(
                    f"{type(self).__name__}(ard_num_dims={self.ard_num_dims}) cannot apply last_dim_is_batch: its "
                    "per-dimension hyperparameters would meet one-column inputs. Build it without ard_num_dims and "
                    "with batch_shape=torch.Size([d]) to get one kernel per dimension."
                )
            x1 = x1.mT.unsqueeze(-1)
            x2 = x1 if same else x2.mT.unsqueeze(-1)
            last_dim_is_batch = False
        kwargs = dict(params) if takes_kw else {}
        if takes_ldb and last_dim_is_batch:
            kwargs["last_dim_is_batch"] = True
        if diag and not takes_diag:
            return self._diag_by_pairs(x1, x2, kwargs)
        if takes_diag:
            kwargs["diag"] = diag
        out = self.forward(x1, x2, **kwargs)
        if not isinstance(out, torch.Tensor):
            out = out.to_dense()  # an operator returned by a composite forward
        n, m = x1.shape[-2], x2.shape[-2]
        if diag and not _names_diag(type(self)) and tuple(out.shape[-2:]) == (n, m):
            out = out.diagonal(dim1=-2, dim2=-1)  # a forward that took **params but ignored diag (as GPyTorch allows)
        expected = (n,) if diag else (n, m)
        if tuple(out.shape[-len(expected) :]) != expected:
            raise ShapeError(
                f"{type(self).__name__}.forward returned shape {tuple(out.shape)} for inputs "
                f"{tuple(x1.shape)} and {tuple(x2.shape)}; expected (*batch, {', '.join(map(str, expected))})."
            )
        return out

    def _diag_by_pairs(self, x1, x2, kwargs):
        """k(x1ᵢ, x2ᵢ) for each i without the n × n matrix: forward on n batches of 1 × 1."""
        out = self.forward(x1.unsqueeze(-2), x2.unsqueeze(-2), **kwargs)
        if isinstance(out, torch.Tensor) and out.shape[-2:] == (1, 1):
            return out[..., 0, 0]
        full = self.forward(x1, x2, **kwargs)  # forward does not broadcast over batches
        return full.diagonal(dim1=-2, dim2=-1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, **params) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x1, x2).")

    # ------------------------------------------------------------------ helpers for subclasses
    def covar_dist(self, x1, x2, diag: bool = False, square_dist: bool = False, **params) -> torch.Tensor:
        """Euclidean (or squared) distance between rows, ``(*batch, n, m)`` or ``(*batch, n)``."""
        if diag:
            d2 = (x1 - x2).pow(2).sum(-1)
            return d2 if square_dist else d2.clamp_min(1e-30).sqrt()
        return sq_dist(x1, x2) if square_dist else dist(x1, x2)

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """``x / lengthscale``, ``(*batch, n, d)``."""
        return x / self.lengthscale

    # ------------------------------------------------------------------ algebra
    def __add__(self, other: Kernel) -> Kernel:
        from torchgp.kernels.composition import AdditiveKernel

        return AdditiveKernel(self, other)

    def __mul__(self, other: Kernel) -> Kernel:
        from torchgp.kernels.composition import ProductKernel

        return ProductKernel(self, other)

    def num_outputs_per_input(self, x1, x2) -> int:
        return 1

    def __getstate__(self):
        return self.__dict__
