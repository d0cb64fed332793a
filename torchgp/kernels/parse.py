r"""Kernels from short strings: ``parse_kernel("rbf + periodic * rbf", ard_num_dims=3)``.

Grammar (``*`` binds tighter than ``+``; parentheses group)::

    expr   := term ("+" term)*
    term   := factor ("*" factor)*
    factor := NAME | "(" expr ")"

Names (case-insensitive): ``rbf`` (aliases ``se``, ``sqexp``), ``matern12``, ``matern32``,
``matern52``, ``rq``, ``periodic``, ``linear``, ``poly2``, ``poly3``, ... (degree after ``poly``),
``cosine``, ``sm4``, ``sm2``, ... (spectral mixture with that many components).

Each additive term (a product of factors, or a single factor) is wrapped in one
:class:`~torchgp.kernels.ScaleKernel`, so ``"rbf + periodic * rbf"`` is
``ScaleKernel(RBF) + ScaleKernel(Periodic * RBF)``: one output scale per term (a scale on
each factor of a product would not be identifiable). Stationary kernels get one lengthscale per
input dimension (ARD) when ``ard_num_dims`` is given and ``ard=True``.
"""

from __future__ import annotations

import math
import re

import torch

from torchgp.errors import InputError
from torchgp.kernels.composition import AdditiveKernel, ProductKernel
from torchgp.kernels.dot_product import LinearKernel, PolynomialKernel
from torchgp.kernels.kernel import Kernel
from torchgp.kernels.scale import ScaleKernel
from torchgp.kernels.stationary import (
    CosineKernel,
    MaternKernel,
    PeriodicKernel,
    RBFKernel,
    RQKernel,
    SpectralMixtureKernel,
)

__all__ = ["parse_kernel", "init_from_data", "KERNEL_NAMES"]

KERNEL_NAMES = ("rbf", "matern12", "matern32", "matern52", "rq", "periodic", "linear", "polyN", "cosine", "smN")

_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z_0-9]*)|(\+|\*|\(|\)))")


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise InputError(
                f"Cannot parse kernel string {text!r} at position {pos} ({text[pos : pos + 10]!r}): use kernel names "
                f"({', '.join(KERNEL_NAMES)}) joined by '+', '*' and parentheses, e.g. 'rbf + periodic * rbf'."
            )
        tokens.append(match.group(1) or match.group(2))
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


def _leaf(name: str, ard_num_dims: int | None, ard: bool, batch_shape: torch.Size) -> Kernel:
    key = name.lower()
    ard_dims = ard_num_dims if ard else None
    common = {"batch_shape": batch_shape}
    if key in ("rbf", "se", "sqexp"):
        return RBFKernel(ard_num_dims=ard_dims, **common)
    matern = {"matern12": 0.5, "matern32": 1.5, "matern52": 2.5}
    if key in matern:
        return MaternKernel(nu=matern[key], ard_num_dims=ard_dims, **common)
    if key == "rq":
        return RQKernel(ard_num_dims=ard_dims, **common)
    if key in ("periodic", "per"):
        return PeriodicKernel(ard_num_dims=ard_dims, **common)
    if key in ("linear", "lin"):
        return LinearKernel(**common)
    if key == "cosine":
        return CosineKernel(**common)
    poly = re.fullmatch(r"poly(\d+)", key)
    if poly:
        return PolynomialKernel(power=int(poly.group(1)), **common)
    sm = re.fullmatch(r"sm(\d+)", key)
    if sm and int(sm.group(1)) >= 1:
        return SpectralMixtureKernel(num_mixtures=int(sm.group(1)), ard_num_dims=ard_num_dims or 1, **common)
    raise InputError(
        f"Unknown kernel name {name!r}. Known names: {', '.join(KERNEL_NAMES)} (polyN: polynomial of degree N, "
        "smN: spectral mixture with N components)."
    )


class _Parser:
    def __init__(self, text, ard_num_dims, ard, batch_shape):
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.leaf_args = (ard_num_dims, ard, torch.Size(batch_shape))

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self):
        token = self.peek()
        self.pos += 1
        return token

    def error(self, what):
        return InputError(
            f"Cannot parse kernel string {self.text!r}: {what}. Write names joined by '+' and '*', with parentheses "
            "for grouping, e.g. 'rbf + periodic * rbf' or '(rbf + linear) * periodic'."
        )

    def expr(self) -> Kernel:
        terms = [self.term()]
        while self.peek() == "+":
            self.take()
            terms.append(self.term())
        scaled = [ScaleKernel(t) for t in terms]
        return scaled[0] if len(scaled) == 1 else AdditiveKernel(*scaled)

    def term(self) -> Kernel:
        factors = [self.factor()]
        while self.peek() == "*":
            self.take()
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else ProductKernel(*factors)

    def factor(self) -> Kernel:
        token = self.take()
        if token is None:
            raise self.error("it ends where a kernel name was expected")
        if token == "(":
            inner = self.expr()
            if self.take() != ")":
                raise self.error("a '(' is not closed")
            return inner
        if token in ("+", "*", ")"):
            raise self.error(f"unexpected {token!r} where a kernel name was expected")
        return _leaf(token, *self.leaf_args)

    def parse(self) -> Kernel:
        if not self.tokens:
            raise self.error("it is empty")
        kernel = self.expr()
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek()!r} after a complete expression")
        return kernel


def parse_kernel(
    spec: str | Kernel, ard_num_dims: int | None = None, ard: bool = True, batch_shape: torch.Size = torch.Size()
) -> Kernel:
    """Build a kernel from a string such as ``"rbf + periodic * rbf"`` (a Kernel is returned as is).

    Args:
        spec: the kernel string (see the module docstring), or a :class:`Kernel`.
        ard_num_dims: input dimension d; stationary kernels get d lengthscales when ``ard``.
        ard: one lengthscale per dimension for stationary kernels (default True).
        batch_shape: batch shape of every hyperparameter.

    Returns:
        The kernel; each additive term is wrapped in a ``ScaleKernel``.

    Raises:
        InputError: unknown name or malformed expression (the message shows the grammar).

    Example:
        >>> k = parse_kernel("rbf + periodic * rbf", ard_num_dims=1)
        >>> type(k).__name__, [type(t.base_kernel).__name__ for t in k.kernels]
        ('AdditiveKernel', ['RBFKernel', 'ProductKernel'])
    """
    if isinstance(spec, Kernel):
        return spec
    if not isinstance(spec, str):
        raise InputError(
            f"A kernel must be a torchgp Kernel or a string like 'rbf + periodic'; got {type(spec).__name__}."
        )
    return _Parser(spec, ard_num_dims, ard, batch_shape).parse()


def _inside(value: torch.Tensor, constraint) -> torch.Tensor:
    """``value`` moved into ``constraint``'s open interval (by ``1e-6`` of its width, or of a half-open bound)."""
    lo = constraint.lower_bound.to(value)
    hi = constraint.upper_bound.to(value)
    margin = torch.where(
        torch.isfinite(hi - lo), 1e-6 * (hi - lo), 1e-6 * torch.where(torch.isfinite(lo), lo, hi).abs()
    )
    lo_in = torch.maximum(lo + margin, torch.nextafter(lo, torch.full_like(lo, math.inf)))
    hi_in = torch.minimum(hi - margin, torch.nextafter(hi, torch.full_like(hi, -math.inf)))
    return torch.maximum(torch.minimum(value, hi_in), lo_in)


def init_from_data(kernel: Kernel, X: torch.Tensor, y_var: float = 1.0) -> Kernel:
    """Data-driven starting values: lengthscales from the inputs' spread, output scales sharing ``y_var``.

    Every lengthscale is set to its input column's standard deviation (a constant column takes the geometric
    mean of the others'; the value is moved inside the lengthscale's constraint), and each ``ScaleKernel``'s
    output scale to ``y_var / (number of ScaleKernels)``. Works in place and returns ``kernel``.

    Args:
        kernel: the kernel to initialise.
        X: ``(n, d)`` training inputs.
        y_var: variance of the training targets.
    """
    with torch.no_grad():
        spread = X.std(0) if X.shape[0] > 1 else torch.full((X.shape[-1],), math.nan, dtype=X.dtype)
        # scale-free: a column is constant when its spread is within rounding of its magnitude
        magnitude = X.abs().amax(0) if X.shape[0] else torch.zeros_like(spread)
        varied = torch.isfinite(spread) & (spread > 16 * torch.finfo(X.dtype).eps * magnitude) & (spread > 0)
        # constant columns take the other columns' typical spread (their lengthscale does not matter to the fit)
        fill = spread[varied].log().mean().exp() if bool(varied.any()) else torch.ones((), dtype=X.dtype)
        spread = torch.where(varied, spread, fill)
        scales = [m for m in kernel.modules() if isinstance(m, ScaleKernel)]
        for module in kernel.modules():
            if getattr(module, "has_lengthscale", False) and "lengthscale" in module._constrained:
                ls = module.lengthscale
                cols = spread if module.active_dims is None else spread[module.active_dims]
                value = cols if ls.shape[-1] == cols.numel() else cols.mean().expand(ls.shape[-1])
                constraint = module.raw_lengthscale_constraint
                module.lengthscale = _inside(value.to(ls).expand_as(ls), constraint)
        for s in scales:
            s.outputscale = torch.full_like(s.outputscale, max(y_var, 1e-6) / max(len(scales), 1))
    return kernel
