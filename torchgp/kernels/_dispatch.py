"""How the ``Kernel`` base calls a subclass: which arguments its ``forward`` takes, how it computes ``diag=True``.

Read once per class (cached), from the signatures and the class hierarchy; and the one input check
every kernel and mean shares (1-D inputs become one column).
"""

from __future__ import annotations

import inspect
from functools import cache

import torch

from torchgp.errors import ShapeError


@cache
def forward_accepts(cls) -> tuple[bool, bool, bool]:
    """(names diag, handles last_dim_is_batch, accepts **params) for ``cls.forward``.

    ``diag`` and ``last_dim_is_batch`` count only when ``forward`` names them: a forward taking
    ``**params`` would silently ignore them, so the base class computes the diagonal on aligned
    pairs and reshapes the inputs for ``last_dim_is_batch`` instead.
    """
    names = inspect.signature(cls.forward).parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in names.values())
    return "diag" in names, "last_dim_is_batch" in names, var_kw


def _defining_class(cls, name: str):
    return next(c for c in cls.__mro__ if name in c.__dict__)


@cache
def diag_route(cls, base) -> str:
    """How ``cls`` computes ``diag=True``: ``"forward_diag"``, ``"forward"`` (a ``diag=`` argument) or ``"pairs"``.

    ``base`` is the root kernel class (whose ``forward_diag`` is the aligned-pairs default). A
    ``forward_diag`` counts only if it is defined on the class that defines ``forward`` or below it:
    a subclass that rewrites ``forward`` must not inherit a diagonal of different maths.
    """
    fd, fw = _defining_class(cls, "forward_diag"), _defining_class(cls, "forward")
    if fd is not base and issubclass(fd, fw):
        return "forward_diag"
    return "forward" if forward_accepts(cls)[0] else "pairs"


def as_inputs(x, name: str) -> torch.Tensor:
    """Inputs as ``(*batch, n, d)``: a 1-D tensor of n points becomes ``(n, 1)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (*batch, n, d); got {type(x).__name__}.")
    if x.dim() == 0:
        raise ShapeError(f"{name} must have shape (n,) or (*batch, n, d); got a scalar.")
    return x.unsqueeze(-1) if x.dim() == 1 else x


def call_with_hooks(self, args: tuple, kwargs: dict):
    """``nn.Module.__call__``'s hook protocol around the kernel ``self``'s ``_call`` (``forward`` stays the maths)."""
    for hook_id, hook in self._forward_pre_hooks.items():
        if hook_id in self._forward_pre_hooks_with_kwargs:
            res = hook(self, args, kwargs)
            if res is not None:
                args, kwargs = res
        else:
            res = hook(self, args)
            if res is not None:
                args = res if isinstance(res, tuple) else (res,)
    out = self._call(*args, **kwargs)
    for hook_id, hook in self._forward_hooks.items():
        if hook_id in self._forward_hooks_with_kwargs:
            res = hook(self, args, kwargs, out)
        else:
            res = hook(self, args, out)
        if res is not None:
            out = res
    return out
