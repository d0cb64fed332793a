r"""``HammingIMQKernel``: inverse multiquadric of the Hamming distance between one-hot sequences."""

from __future__ import annotations

import torch

from torchgp.constraints import Positive
from torchgp.errors import ShapeError
from torchgp.kernels.kernel import Kernel


class HammingIMQKernel(Kernel):
    r"""Inverse multiquadric Hamming kernel (Amin et al. 2023, "Biological sequence kernels with guaranteed flexibility").

    .. math::
        k(x, x') = \Big(\frac{1 + \alpha}{\alpha + d_H(x, x')}\Big)^{\beta},\qquad
        d_H(x, x') = T - \sum_{t=1}^{T} \sum_{v=1}^{V} x_{tv} x'_{tv}

    for sequences of length T over a vocabulary of V symbols, one-hot encoded and flattened to
    ``T·V`` columns (``d_H`` counts the positions where the sequences differ).

    Args:
        vocab_size: V.
        batch_shape: batch of independent kernels.
        alpha_prior, alpha_constraint: prior/constraint on α (default ``Positive()``).
        beta_prior, beta_constraint: prior/constraint on β (default ``Positive()``).

    Shapes:
        ``x1 (*batch, n, T·V)``, ``x2 (*batch, m, T·V)`` (one-hot, flattened) → ``(*batch, n, m)``;
        ``alpha``, ``beta`` are ``(*batch, 1)``.
    """

    def __init__(
        self,
        vocab_size: int,
        batch_shape=torch.Size([]),
        alpha_prior=None,
        alpha_constraint=None,
        beta_prior=None,
        beta_constraint=None,
    ):
        super().__init__(batch_shape=batch_shape)
        self.vocab_size = int(vocab_size)
        for name, prior, constraint in (
            ("alpha", alpha_prior, alpha_constraint),
            ("beta", beta_prior, beta_constraint),
        ):
            constraint = Positive() if constraint is None else constraint
            self.register_constrained(name, constraint.transform(torch.zeros(*self.batch_shape, 1)), constraint, prior)

    def _length(self, x: torch.Tensor) -> int:
        if x.shape[-1] % self.vocab_size:
            raise ShapeError(
                f"HammingIMQKernel(vocab_size={self.vocab_size}): inputs need T·{self.vocab_size} columns (one-hot "
                f"sequences flattened); got {x.shape[-1]}. Flatten (*batch, n, T, V) one-hot tensors to "
                "(*batch, n, T·V)."
            )
        return x.shape[-1] // self.vocab_size

    def _imq(self, d_h: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return ((1 + alpha) / (alpha + d_h)).pow(beta)

    def forward(self, x1, x2, **params):
        # one-hot rows: Σ_t Σ_v x_tv x'_tv is the flattened dot product (number of matching positions);
        # exact in floating point for 0/1 entries, so d_H is never negative there (no clamp: smooth in x)
        d_h = self._length(x1) - x1 @ x2.mT
        return self._imq(d_h, self.alpha.unsqueeze(-1), self.beta.unsqueeze(-1))

    def forward_diag(self, x1, x2, **params):
        d_h = self._length(x1) - (x1 * x2).sum(-1)
        return self._imq(d_h, self.alpha, self.beta)
