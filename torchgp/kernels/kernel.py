"""The ``Kernel`` base class: everything except the maths.

A kernel subclass writes ``forward(x1, x2)`` returning the ``(*batch, n, m)`` covariance; the
base class handles 1-D inputs, ``active_dims``, ``diag=True`` (without forming the full matrix:
``forward_diag(x1, x2)`` if the kernel writes one, else the forward on aligned pairs),
``last_dim_is_batch``, batch shapes, shape errors, laziness (``kernel(X)`` returns a
:class:`~torchgp.linalg.KernelOperator` that is evaluated only when needed), and sums and
products (``k1 + k2``, ``k1 * k2``) and batch indexing (``kernel[i]``, in ``_batch_index.py``). How it
reads a subclass's ``forward`` signature lives in ``_dispatch.py``.
"""

from __future__ import annotations

import copy
import functools
import operator

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.constraints import Positive
from torchgp.errors import ShapeError
from torchgp.kernels._batch_index import batch_key, index_kernel_
from torchgp.kernels._dispatch import as_inputs, call_with_hooks, diag_route, forward_accepts
from torchgp.kernels.distance import dist, sq_dist
from torchgp.linalg.operators import KernelOperator
from torchgp.module import Module


class Kernel(Module):
    """Base covariance function.

    A subclass writes ``forward(x1, x2)`` (the matrix) and, where the diagonal is cheaper than the
    matrix, ``forward_diag(x1, x2)`` (``k(x1ᵢ, x2ᵢ)`` row by row); without it ``diag=True`` runs
    ``forward`` on the n aligned pairs. A GPyTorch-style ``forward(x1, x2, diag=False, **params)``
    is called with ``diag=True`` instead.

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
        c = self.num_outputs_per_input(x1, x2)  # several outputs per input: multitask, derivative kernels
        return torch.Size([*batch, x1.shape[-2] * c, x2.shape[-2] * c])

    # ------------------------------------------------------------------ calling
    def __call__(self, *args, **kwargs):
        """Covariance between ``x1 (*batch, n, d)`` and ``x2 (*batch, m, d)`` (default ``x2 = x1``).

        Signature: ``kernel(x1, x2=None, diag=False, last_dim_is_batch=False, **params)``. Returns a
        lazy operator ``(*batch, n, m)`` (``.to_dense()`` evaluates it), or the ``(*batch, n)``
        diagonal when ``diag=True``. Forward pre-hooks and hooks registered with
        ``register_forward_pre_hook`` / ``register_forward_hook`` see these arguments and the
        (still lazy) result, as on any ``nn.Module``.
        """
        if not (self._forward_pre_hooks or self._forward_hooks):
            return self._call(*args, **kwargs)
        return call_with_hooks(self, args, kwargs)

    def _call(self, x1, x2=None, diag: bool = False, last_dim_is_batch: bool = False, **params):
        x1 = as_inputs(x1, "x1")
        x2 = x1 if x2 is None else as_inputs(x2, "x2")
        if x1.shape[-1] != x2.shape[-1]:
            raise ShapeError(
                f"{type(self).__name__}: x1 has {x1.shape[-1]} features but x2 has {x2.shape[-1]} "
                f"(shapes {tuple(x1.shape)} and {tuple(x2.shape)}); both need shape (*batch, n, d) with the same d."
            )
        self._check_dims(x1.shape)
        if diag:
            if x1.shape[-2] != x2.shape[-2]:
                raise ShapeError(
                    f"diag=True needs as many points in x1 as in x2; got {x1.shape[-2]} and {x2.shape[-2]}."
                )
            return self.evaluate_block(x1, x2, diag=True, last_dim_is_batch=last_dim_is_batch, **params)
        if settings.lazily_evaluate_kernels.on():
            return self._lazy(x1, x2, last_dim_is_batch=last_dim_is_batch, **params)
        return self.evaluate_block(x1, x2, last_dim_is_batch=last_dim_is_batch, **params)

    def _lazy(self, x1, x2, **params):
        """The lazy matrix ``k(x1, x2)``; kernels with a structured matrix (low rank) return their operator."""
        return KernelOperator(self, x1, x2, **params)

    # Whether child kernels see this kernel's (column-selected) inputs; kernels that transform
    # their inputs before handing them on (embeddings, radii) set it to False.
    _children_see_inputs = True

    def _check_dims(self, shape: torch.Size):
        """Raise a :class:`ShapeError` if inputs of ``shape`` ``(*batch, n, d)`` do not fit this kernel.

        Children are checked against the columns this kernel selects with ``active_dims``.
        """
        d = shape[-1]
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
                f"with {d} features (shape {tuple(shape)}). Build it with ard_num_dims={d}, or select "
                "columns with active_dims."
            )
        if self._children_see_inputs:
            sliced = torch.Size([*shape[:-1], d])
            for child in self.children():
                if isinstance(child, Kernel):
                    child._check_dims(sliced)

    def evaluate_block(self, x1, x2, diag: bool = False, last_dim_is_batch: bool = False, **params) -> torch.Tensor:
        """Dense ``k(x1, x2)`` (``(*batch, n, m)``, or ``(*batch, n)`` if ``diag``), differentiable.

        Applies ``active_dims`` and ``last_dim_is_batch`` and calls ``forward`` (or, for the
        diagonal, ``forward_diag``) with only the arguments it accepts. Composite kernels call this
        on their parts.
        """
        same = x1 is x2
        if self.active_dims is not None:
            x1 = x1.index_select(-1, self.active_dims)
            x2 = x1 if same else x2.index_select(-1, self.active_dims)
        takes_diag, takes_ldb, takes_kw = forward_accepts(type(self))
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
        route = diag_route(type(self), Kernel) if diag else None
        if route == "forward_diag":
            out = self.forward_diag(x1, x2, **kwargs)
        elif route == "pairs":
            out = Kernel.forward_diag(self, x1, x2, **kwargs)
        else:
            if takes_diag:
                kwargs["diag"] = diag
            out = self.forward(x1, x2, **kwargs)
        if not isinstance(out, torch.Tensor):
            out = out.to_dense()  # an operator returned by a composite forward
        c = self.num_outputs_per_input(x1, x2)  # rows per input point (d + 1 for derivative kernels)
        n, m = x1.shape[-2] * c, x2.shape[-2] * c
        expected = (n,) if diag else (n, m)
        if tuple(out.shape[-len(expected) :]) != expected:
            what = "forward_diag" if route in ("forward_diag", "pairs") else "forward"
            raise ShapeError(
                f"{type(self).__name__}.{what} returned shape {tuple(out.shape)} for inputs "
                f"{tuple(x1.shape)} and {tuple(x2.shape)}; expected (*batch, {', '.join(map(str, expected))})."
            )
        return out

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, **params) -> torch.Tensor:
        """The kernel's maths: ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → ``(*batch, n, m)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x1, x2).")

    def forward_diag(self, x1: torch.Tensor, x2: torch.Tensor, **params) -> torch.Tensor:
        """``k(x1ᵢ, x2ᵢ)`` for each row i: ``x1, x2 (*batch, n, d)`` → ``(*batch, n)``.

        Override it where the diagonal is cheaper than the matrix. The default evaluates
        ``forward`` on the n aligned pairs without forming the n × n matrix: the inputs are
        broadcast to the kernel's batch, the n pairs become a leading batch dimension
        ``(n, *batch, 1, d)`` (so hyperparameters of shape ``(*batch, ...)`` still line up), and
        each pair gives a ``1 × 1`` block.
        """
        batch = broadcast_shapes(x1.shape[:-2], x2.shape[:-2], self.batch_shape)
        pairs1 = x1.expand(*batch, *x1.shape[-2:]).movedim(-2, 0).unsqueeze(-2)
        pairs2 = x2.expand(*batch, *x2.shape[-2:]).movedim(-2, 0).unsqueeze(-2)
        out = self.forward(pairs1, pairs2, **params)
        if not isinstance(out, torch.Tensor):
            out = out.to_dense()
        if tuple(out.shape[-2:]) != (1, 1):
            raise ShapeError(
                f"{type(self).__name__}.forward returned shape {tuple(out.shape)} for 1 × 1 pair blocks "
                f"{tuple(pairs1.shape)}; a forward must return (*batch, n, m) for inputs (*batch, n, d) and "
                "(*batch, m, d). Write forward_diag(x1, x2) if it cannot take extra leading batch dimensions."
            )
        out = out[..., 0, 0]
        return out.movedim(0, -1) if out.dim() > 0 else out

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

    # ------------------------------------------------------------------ hooks of the fused stationary node
    def _takes_outputscale(self) -> bool:
        """Whether ``forward(x1, x2, outputscale=s)`` and ``forward_diag`` return ``s ·`` the matrix (a ``ScaleKernel``
        over this kernel then hands ``s (*batch)`` in instead of multiplying the result)."""
        return False

    def _exp_rate(self) -> float | None:
        """``c`` if this kernel is ``exp(c r²)`` of a squared scaled distance on the fused path, else ``None``.

        Products evaluate their factors with a rate in one node (``StationaryKernel._exp_product``).
        """
        return None

    # ------------------------------------------------------------------ batch indexing
    def __getitem__(self, index) -> Kernel:
        """The kernels ``index`` selects from this batch: ``k[1]``, ``k[1:3]``, ``k[..., 0]``, ``k[[0, 2]]``.

        The index applies to the batch dimensions only: a kernel of ``batch_shape (*B)`` gives a copy of
        ``batch_shape`` ``empty(B)[index].shape`` whose hyperparameters (new leaf parameters, as GPyTorch's),
        buffers and constraint bounds of shape ``(*B, *event)`` are ``t[index]``; sub-kernels whose batch
        shape starts with ``B`` are indexed alike, those without one are copied. Without a batch shape: itself.

        Raises:
            IndexError: an index with more entries than batch dimensions, or out of range.
            ShapeError: a sub-kernel whose batch shape neither starts with this kernel's nor is empty.
        """
        if not self.batch_shape:
            return self
        key, new_batch = batch_key(self.batch_shape, index)
        out = copy.deepcopy(self)
        index_kernel_(out, key, self.batch_shape, new_batch, Kernel)
        return out

    def __iter__(self):
        # without it, ``__getitem__`` would make every kernel iterable (forever, for one without a batch shape)
        raise TypeError(f"{type(self).__name__} is not iterable; select batch members with kernel[i].")

    # ------------------------------------------------------------------ algebra
    def __add__(self, other: Kernel) -> Kernel:
        return AdditiveKernel(self, other)

    def __mul__(self, other: Kernel) -> Kernel:
        return ProductKernel(self, other)

    def num_outputs_per_input(self, x1, x2) -> int:
        return 1

    def __getstate__(self):
        return self.__dict__


# ---------------------------------------------------------------------- sums and products
# In the module of ``Kernel`` itself: ``k1 + k2`` builds one, and a sum is a kernel (R&W 2006, §4.2.4).
class _Combination(Kernel):
    """Shared body of sums and products; flattens nested combinations of the same kind."""

    _op = None

    def __init__(self, *kernels: Kernel):
        if not kernels:
            raise ValueError(f"{type(self).__name__} needs at least one kernel.")
        for k in kernels:
            if not isinstance(k, Kernel):
                raise TypeError(f"{type(self).__name__} takes torchgp kernels; got {type(k).__name__}.")
        batch = broadcast_shapes(*(k.batch_shape for k in kernels))
        super().__init__(batch_shape=batch)
        flat = []
        for k in kernels:
            flat.extend(k.kernels if type(k) is type(self) else [k])
        self.kernels = torch.nn.ModuleList(flat)

    @property
    def is_stationary(self) -> bool:
        return all(k.is_stationary for k in self.kernels)

    def forward(self, x1, x2, last_dim_is_batch=False, **params):
        parts = (k.evaluate_block(x1, x2, last_dim_is_batch=last_dim_is_batch, **params) for k in self.kernels)
        return functools.reduce(self._op, parts)

    def forward_diag(self, x1, x2, last_dim_is_batch=False, **params):
        # each part's own diagonal: O(n) for parts with a cheap one
        parts = (
            k.evaluate_block(x1, x2, diag=True, last_dim_is_batch=last_dim_is_batch, **params) for k in self.kernels
        )
        return functools.reduce(self._op, parts)


class AdditiveKernel(_Combination):
    r""":math:`k(x, x') = \sum_i k_i(x, x')`."""

    _op = staticmethod(operator.add)

    def forward(self, x1, x2, last_dim_is_batch=False, **params):
        """``Σ_i k_i(x1, x2)`` ``(*batch, n, m)``: the third and later terms are added into the first sum's buffer."""
        parts = [k.evaluate_block(x1, x2, last_dim_is_batch=last_dim_is_batch, **params) for k in self.kernels]
        out = parts[0] if len(parts) == 1 else parts[0] + parts[1]  # a fresh tensor (its backward keeps nothing)
        for p in parts[2:]:
            out = out.add_(p) if p.shape == out.shape else out + p
        return out

    forward_diag = _Combination.forward_diag


class ProductKernel(_Combination):
    r""":math:`k(x, x') = \prod_i k_i(x, x')` (elementwise).

    Factors of the exponential profile ``exp(c r²)`` (RBF, periodic, any stationary kernel declaring
    ``dK_dr2_factor``) multiply as one kernel of their concatenated scaled features,
    :math:`\prod_i e^{c_i r_i^2} = e^{c \sum_i (c_i/c) r_i^2}`, and are evaluated in one fused node; the other
    factors multiply element-wise. A ``ScaleKernel`` over a product hands its outputscale to that node.
    """

    _op = staticmethod(operator.mul)

    def _takes_outputscale(self) -> bool:
        cls = type(self)
        return cls.forward is ProductKernel.forward and cls.forward_diag is ProductKernel.forward_diag

    def forward(self, x1, x2, last_dim_is_batch=False, outputscale=None, **params):
        """``s Π_i k_i(x1, x2)`` ``(*batch, n, m)``; ``outputscale`` ``s (*batch)`` optional (default 1)."""
        group = [] if last_dim_is_batch else [k for k in self.kernels if k._exp_rate() is not None]
        parts = []
        if group:
            parts.append(group[0]._exp_product(group, x1, x2, outputscale))
            outputscale = None
        for k in self.kernels:
            if group and any(k is g for g in group):
                continue
            if outputscale is not None and not last_dim_is_batch and k._takes_outputscale():
                parts.append(k.evaluate_block(x1, x2, outputscale=outputscale, **params))
                outputscale = None
            else:
                parts.append(k.evaluate_block(x1, x2, last_dim_is_batch=last_dim_is_batch, **params))
        out = functools.reduce(operator.mul, parts)
        return out if outputscale is None else out * outputscale[..., None, None]

    def forward_diag(self, x1, x2, last_dim_is_batch=False, outputscale=None, **params):
        """``s Π_i k_i(x1ᵢ, x2ᵢ)`` ``(*batch, n)``, each factor's own diagonal."""
        out = super().forward_diag(x1, x2, last_dim_is_batch=last_dim_is_batch, **params)
        return out if outputscale is None else out * outputscale[..., None]
