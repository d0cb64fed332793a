r"""Kronecker products and block-diagonal operators.

* :class:`KroneckerProductOperator` is ``A_1 ⊗ A_2 ⊗ … ⊗ A_p`` (any number of factors ``(*batch, n_i, m_i)``),
  shape ``(*batch, Π n_i, Π m_i)``; ``matmul`` applies one factor per axis of the reshaped right-hand side
  (``(A ⊗ B) vec(X) = vec(A X Bᵀ)`` in row-major order), never the dense product;
* :class:`KroneckerProductAddedDiag` is ``A_1 ⊗ … ⊗ A_p + diag(d)``, with ``d`` a constant (``σ² I``), a
  per-factor-structured diagonal ``d_1 ⊗ … ⊗ d_p`` (e.g. ``D_t ⊗ I``), or a general vector; the first two are
  solved by per-factor eigendecompositions (:mod:`torchgp.linalg.solvers`);
* :class:`BlockDiagOperator` sees a batch of blocks ``(*batch, b, n, n)`` as one block-diagonal ``(*batch, b n, b n)``.
"""

from __future__ import annotations

import math

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.errors import ShapeError
from torchgp.linalg.operators.base import Operator
from torchgp.linalg.operators.basic import AddedDiagOperator, ConstantDiagOperator, DiagOperator, diag_tensor
from torchgp.linalg.operators.indexing import index_batch


def kron_vectors(vectors, batch_shape=()) -> torch.Tensor:
    """``v_1 ⊗ … ⊗ v_p`` for ``v_i (*batch, n_i)`` → ``(*batch, Π n_i)``."""
    out = vectors[0]
    for v in vectors[1:]:
        out = out.unsqueeze(-1) * v.unsqueeze(-2)
        out = out.reshape(*out.shape[:-2], -1)
    return out.expand(*broadcast_shapes(batch_shape, out.shape[:-1]), out.shape[-1])


def kron_apply(fns, sizes_in, sizes_out, rhs: torch.Tensor, batch_shape) -> torch.Tensor:
    """``(F_1 ⊗ … ⊗ F_p) rhs`` where ``F_i`` maps ``(*batch, m_i, c) → (*batch, n_i, c)``; ``rhs (*batch, Π m_i, k)``."""
    b = broadcast_shapes(batch_shape, rhs.shape[:-2])
    k = rhs.shape[-1]
    nb = len(b)
    X = rhs.expand(*b, *rhs.shape[-2:]).reshape(*b, *sizes_in, k)
    for i, fn in enumerate(fns):
        # Bring axis i first, apply F_i to it with every other axis as columns, put it back.
        Y = X.movedim(nb + i, nb)
        rest = Y.shape[nb + 1 :]
        Z = fn(Y.reshape(*b, sizes_in[i], -1))
        X = Z.reshape(*Z.shape[:-2], sizes_out[i], *rest).movedim(Z.dim() - 2, nb + i)
    return X.reshape(*X.shape[: X.dim() - len(sizes_in) - 1], math.prod(sizes_out), k)


class KroneckerProductOperator(Operator):
    """``A_1 ⊗ A_2 ⊗ … ⊗ A_p`` of operators (or tensors) ``(*batch, n_i, m_i)``; shape ``(*batch, Π n_i, Π m_i)``.

    Example:
        >>> import torch
        >>> A, B = torch.eye(2) * 2, torch.ones(3, 3)
        >>> K = KroneckerProductOperator(A, B)
        >>> torch.equal(K.to_dense(), torch.kron(A, B))
        True
    """

    def __init__(self, *factors):
        from torchgp.linalg.operators import as_operator

        flat = []
        for f in factors:
            f = as_operator(f)
            flat.extend(f.factors if isinstance(f, KroneckerProductOperator) else [f])
        if not flat:
            raise ValueError("KroneckerProductOperator needs at least one factor.")
        self.factors = tuple(flat)
        batch = broadcast_shapes(*(f.batch_shape for f in flat))
        self.shape = torch.Size([*batch, math.prod(f.shape[-2] for f in flat), math.prod(f.shape[-1] for f in flat)])
        self.dtype, self.device = flat[0].dtype, flat[0].device

    @property
    def linear_ops(self):
        """The factors (GPyTorch's name)."""
        return self.factors

    def _dense(self):
        out = self.factors[0].to_dense()
        for f in self.factors[1:]:
            B = f.to_dense()
            n1, m1, n2, m2 = out.shape[-2], out.shape[-1], B.shape[-2], B.shape[-1]
            out = out[..., :, None, :, None] * B[..., None, :, None, :]
            out = out.reshape(*out.shape[:-4], n1 * n2, m1 * m2)
        return out.expand(self.shape)

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)
        if self.shape[-1] != self.shape[-2] or any(f.shape[-1] != f.shape[-2] for f in self.factors):
            return self.to_dense().diagonal(dim1=-2, dim2=-1)
        return kron_vectors([f.diagonal() for f in self.factors], self.batch_shape)

    def _matmul(self, rhs):
        return kron_apply(
            [f.matmul for f in self.factors],
            [f.shape[-1] for f in self.factors],
            [f.shape[-2] for f in self.factors],
            rhs,
            self.batch_shape,
        )

    def _tensors(self):
        return [t for f in self.factors for t in f._tensors()]

    def _each(self, fn):
        return KroneckerProductOperator(*(fn(f) for f in self.factors))

    def _map(self, fn):
        return self._each(lambda f: f._map(fn))

    def _transpose(self):
        return self._each(lambda f: f._transpose())

    def _expand(self, batch_shape):
        return self._each(lambda f: f.expand(*batch_shape, *f.shape[-2:]))

    def _getitem_batch(self, batch_idx):
        return self._each(lambda f: f.expand(*self.batch_shape, *f.shape[-2:])._getitem_batch(batch_idx))

    def _scale(self, c):
        return KroneckerProductOperator(self.factors[0]._scale(c), *self.factors[1:])

    def _same_layout(self, other) -> bool:
        return (
            isinstance(other, KroneckerProductOperator)
            and len(other.factors) == len(self.factors)
            and all(a.shape[-2:] == b.shape[-2:] for a, b in zip(self.factors, other.factors))
        )

    def _mul_operator(self, other):
        # (A ⊗ B) ∘ (C ⊗ D) = (A ∘ C) ⊗ (B ∘ D).
        if self._same_layout(other):
            return KroneckerProductOperator(*(a.mul(b) for a, b in zip(self.factors, other.factors)))
        if isinstance(other, DiagOperator):
            return other._mul_operator(self)
        return super()._mul_operator(other)

    def _matmul_operator(self, other):
        # (A ⊗ B)(C ⊗ D) = AC ⊗ BD.
        if (
            isinstance(other, KroneckerProductOperator)
            and len(other.factors) == len(self.factors)
            and all(a.shape[-1] == b.shape[-2] for a, b in zip(self.factors, other.factors))
        ):
            return KroneckerProductOperator(*(a._matmul_operator(b) for a, b in zip(self.factors, other.factors)))
        return super()._matmul_operator(other)

    def add_diagonal(self, diag):
        from torchgp.linalg.operators.base import _diag_tensor

        return KroneckerProductAddedDiag(self, _diag_tensor(diag, self))

    def _add_operator(self, other):
        if isinstance(other, KroneckerProductOperator) and all(isinstance(f, DiagOperator) for f in other.factors):
            if [f.shape[-1] for f in other.factors] == [f.shape[-1] for f in self.factors]:
                return KroneckerProductAddedDiag(self, diag_factors=_diag_factors(other.factors))
        if isinstance(other, DiagOperator):
            return self.add_diagonal(other.diagonal())
        return super()._add_operator(other)

    def evaluate_kernel(self):
        return self._each(lambda f: f.evaluate_kernel())


def _diag_factors(factors):
    """Kronecker factors that are diagonal → ``[d_i (*batch, n_i) or None for ones]`` (constants folded into one)."""
    out, const = [], None
    for f in factors:
        if isinstance(f, ConstantDiagOperator):
            c = f.diag_constant  # (*batch, 1)
            const = c if const is None else const * c
            out.append(None)
        else:
            out.append(f.diagonal())
    if const is not None:
        k = next((i for i, d in enumerate(out) if d is not None), None)
        if k is None:
            out[0] = const.expand(*const.shape[:-1], factors[0].shape[-1])
        else:
            out[k] = out[k] * const
    return out


class KroneckerProductAddedDiag(AddedDiagOperator):
    """``A_1 ⊗ … ⊗ A_p + diag(d)``.

    Args:
        base: a :class:`KroneckerProductOperator` ``(*batch, N, N)``, ``N = Π n_i``.
        diag: ``(*batch, N)``; a constant ``(*batch, 1)`` or scalar keeps the ``σ² I`` structure.
        diag_factors: instead of ``diag``, per-factor diagonals ``[d_1, …, d_p]`` (``d_i (*batch, n_i)``, None
            for ones) with ``d = d_1 ⊗ … ⊗ d_p`` (e.g. ``[d_t, None]`` for ``D_t ⊗ I``).
    """

    def __init__(self, base: KroneckerProductOperator, diag: torch.Tensor | None = None, diag_factors=None):
        if not isinstance(base, KroneckerProductOperator):
            raise TypeError(f"KroneckerProductAddedDiag needs a KroneckerProductOperator; got {type(base).__name__}.")
        sizes = [f.shape[-1] for f in base.factors]
        diag = None if diag is None else diag_tensor(diag)
        if diag_factors is None:
            if diag is None:
                raise ValueError("KroneckerProductAddedDiag needs diag or diag_factors.")
            if diag.dim() == 0 or diag.shape[-1] == 1 or diag.stride(-1) == 0:  # σ² I, known from shape or strides
                c = diag.reshape(1) if diag.dim() == 0 else diag[..., :1]
                diag_factors = [c.expand(*c.shape[:-1], sizes[0])] + [None] * (len(sizes) - 1)
        else:
            if len(diag_factors) != len(sizes):
                raise ShapeError(f"diag_factors needs {len(sizes)} entries (one per factor); got {len(diag_factors)}.")
            for d, n in zip(diag_factors, sizes):
                if d is not None and d.shape[-1] != n:
                    raise ShapeError(f"diag_factors: a factor of size {n} got a diagonal of {d.shape[-1]} entries.")
            if all(d is None for d in diag_factors):
                raise ValueError("diag_factors needs at least one diagonal (None stands for ones).")
        self.diag_factors = None if diag_factors is None else list(diag_factors)
        if self.diag_factors is not None:
            ones = [
                torch.ones(n, dtype=base.dtype, device=base.device) if d is None else d
                for d, n in zip(self.diag_factors, sizes)
            ]
            diag = kron_vectors(ones)
        super().__init__(base, diag)

    def _rebuild(self, base, diag):
        return base.add_diagonal(diag)

    def add_diagonal(self, diag):
        from torchgp.linalg.operators.base import _diag_tensor

        diag = _diag_tensor(diag, self)
        given = [d for d in (self.diag_factors or []) if d is not None]
        if self.diag_factors is not None and len(given) == 1 and (diag.dim() == 0 or diag.shape[-1] == 1):
            # d_k ⊗ 1 ⊗ … + c = (d_k + c) ⊗ 1 ⊗ …: the structure survives a constant (jitter).
            new = [None if d is None else d + diag for d in self.diag_factors]
            return KroneckerProductAddedDiag(self.base, diag_factors=new)
        return KroneckerProductAddedDiag(self.base, self.diag + diag)

    def _map(self, fn):
        if self.diag_factors is None:
            return KroneckerProductAddedDiag(self.base._map(fn), fn(self.diag))
        return KroneckerProductAddedDiag(
            self.base._map(fn), diag_factors=[None if d is None else fn(d) for d in self.diag_factors]
        )

    def _with_factors(self, base, fn):
        return KroneckerProductAddedDiag(base, diag_factors=[None if d is None else fn(d) for d in self.diag_factors])

    def _transpose(self):
        if self.diag_factors is None:
            return super()._transpose()
        return self._with_factors(self.base._transpose(), lambda d: d)

    def _expand(self, batch_shape):
        if self.diag_factors is None:
            return super()._expand(batch_shape)
        return self._with_factors(self.base._expand(batch_shape), lambda d: d.expand(*batch_shape, d.shape[-1]))

    def _getitem_batch(self, batch_idx):
        if self.diag_factors is None:
            return super()._getitem_batch(batch_idx)
        base = self.base.expand(*self.batch_shape, *self.base.shape[-2:])._getitem_batch(batch_idx)
        return self._with_factors(base, lambda d: index_batch(d, self.batch_shape, batch_idx, 1))

    def _scale(self, c):
        if self.diag_factors is None:
            return super()._scale(c)
        c = torch.as_tensor(c, dtype=self.dtype, device=self.device)
        k = next(i for i, d in enumerate(self.diag_factors) if d is not None)
        new = [d * c[..., None] if i == k else d for i, d in enumerate(self.diag_factors)]
        return KroneckerProductAddedDiag(self.base._scale(c), diag_factors=new)


class _BlockStack:
    """What acts on the blocks ``(*batch, b, n, m)`` alone, whatever their row order: shared by
    :class:`BlockDiagOperator` and :class:`~torchgp.linalg.operators.block_interleaved.BlockInterleavedOperator`,
    each built from its ``base`` of blocks as ``type(self)(base)``."""

    def _set_blocks(self, base, block_dim: int) -> None:
        """Hold ``base`` (tensor or operator) with its block dimension moved to ``-3``; the shape ``(*batch, b n, b m)``."""
        from torchgp.linalg.operators import as_operator

        base = as_operator(base)
        name = type(self).__name__
        if base.dim() < 3:
            raise ShapeError(f"{name} needs blocks of shape (*batch, b, n, m); got {tuple(base.shape)}.")
        bd = block_dim % base.dim()
        if bd >= base.dim() - 2:
            raise ShapeError(f"{name}: block_dim must be a batch dimension of the blocks.")
        if bd != base.dim() - 3:
            base = _move_batch_dim(base, bd)
        self.base = base
        b, n, m = base.shape[-3:]
        self.num_blocks = b
        self.shape = torch.Size([*base.shape[:-3], b * n, b * m])
        self.dtype, self.device = base.dtype, base.device

    def _tensors(self):
        return self.base._tensors()

    def _map(self, fn):
        return type(self)(self.base._map(fn))

    def _transpose(self):
        return type(self)(self.base._transpose())

    def _expand(self, batch_shape):
        return type(self)(self.base.expand(*batch_shape, *self.base.shape[-3:]))

    def _getitem_batch(self, batch_idx):
        base = self.base.expand(*self.batch_shape, *self.base.shape[-3:])
        return type(self)(base._getitem_batch((*batch_idx, slice(None))))

    def _sum_batch(self, dim):
        return type(self)(self.base.expand(*self.batch_shape, *self.base.shape[-3:])._sum_batch(dim))

    def _scale(self, c):
        c = torch.as_tensor(c, dtype=self.dtype, device=self.device)
        return type(self)(self.base._scale(c[..., None]))

    def _same_blocks(self, other) -> bool:
        return type(other) is type(self) and other.base.shape[-3:] == self.base.shape[-3:]

    def _add_operator(self, other):
        if self._same_blocks(other):
            return type(self)(self.base + other.base)
        if isinstance(other, DiagOperator):
            return self.add_diagonal(other.diagonal())
        return super()._add_operator(other)

    def _mul_operator(self, other):
        if self._same_blocks(other):
            return type(self)(self.base.mul(other.base))
        if isinstance(other, DiagOperator):
            return other._mul_operator(self)
        return super()._mul_operator(other)

    def add_diagonal(self, diag):
        from torchgp.linalg.operators.base import _diag_tensor

        diag = _diag_tensor(diag, self)
        if diag.dim() == 0 or diag.shape[-1] == 1:
            return type(self)(self.base.add_diagonal(diag.unsqueeze(-1) if diag.dim() else diag))
        return type(self)(self.base.add_diagonal(self._diagonal_blocks(diag)))

    def _diagonal_blocks(self, diag: torch.Tensor) -> torch.Tensor:
        """A diagonal ``(*batch, b n)`` in this operator's row order as one per block, ``(*batch, b, n)``."""
        raise NotImplementedError

    def evaluate_kernel(self):
        return type(self)(self.base.evaluate_kernel())


class BlockDiagOperator(_BlockStack, Operator):
    """Blocks ``(*batch, b, n, m)`` seen as one block-diagonal matrix ``(*batch, b n, b m)``.

    Args:
        base: an operator or tensor of blocks, ``(*batch, b, n, m)``.
        block_dim: the dimension of ``base`` that indexes the blocks (GPyTorch's argument; default ``-3``).
    """

    def __init__(self, base, block_dim: int = -3):
        self._set_blocks(base, block_dim)

    def _dense(self):
        B = self.base.to_dense().expand(self.base.shape)
        eye = torch.eye(self.num_blocks, dtype=B.dtype, device=B.device)
        out = torch.einsum("...ipq,ij->...ipjq", B, eye)
        return out.reshape(self.shape)

    def diagonal(self, offset: int = 0, dim1: int = -2, dim2: int = -1):
        if (offset, dim1 % self.dim(), dim2 % self.dim()) != (0, self.dim() - 2, self.dim() - 1):
            return self.to_dense().diagonal(offset=offset, dim1=dim1, dim2=dim2)
        d = self.base.diagonal().expand(self.base.shape[:-1])
        return d.reshape(*d.shape[:-2], -1)

    def _matmul(self, rhs):
        b, m = self.num_blocks, self.base.shape[-1]
        batch = broadcast_shapes(self.batch_shape, rhs.shape[:-2])
        X = rhs.expand(*batch, *rhs.shape[-2:]).reshape(*batch, b, m, rhs.shape[-1])
        Y = self.base.matmul(X)
        return Y.reshape(*Y.shape[:-3], -1, Y.shape[-1])

    def _diagonal_blocks(self, diag: torch.Tensor) -> torch.Tensor:
        return diag.reshape(*diag.shape[:-1], self.num_blocks, -1)  # rows (a, i) → (*batch, b, n)


def _move_batch_dim(op: Operator, dim: int) -> Operator:
    """Move batch dimension ``dim`` of ``op`` to position ``-3`` (by indexing: one slice per block)."""
    from torchgp.linalg.operators.basic import DenseOperator

    return DenseOperator(op.to_dense().movedim(dim, -3))
