r"""Inverses of the transforms that map raw parameters to constrained ones (``gpytorch.utils.transforms``)."""

from __future__ import annotations

import torch

__all__ = ["inv_softplus", "inv_sigmoid", "TRANSFORM_REGISTRY"]


def inv_softplus(x: torch.Tensor) -> torch.Tensor:
    r"""Inverse of softplus, elementwise, for ``x > 0``: :math:`y = x + \log(1 - e^{-x})` (any shape)."""
    # log(e^x - 1) written so that it neither overflows for large x nor cancels for small x
    return x + torch.log(-torch.expm1(-x))


def inv_sigmoid(x: torch.Tensor) -> torch.Tensor:
    r"""Inverse of the logistic sigmoid for ``0 < x < 1``: :math:`y = \log x - \log(1 - x)` (any shape)."""
    return torch.log(x) - torch.log1p(-x)


TRANSFORM_REGISTRY = {
    torch.exp: torch.log,
    torch.nn.functional.softplus: inv_softplus,
    torch.sigmoid: inv_sigmoid,
}


def _get_inv_param_transform(param_transform, inv_param_transform=None):
    """The inverse of ``param_transform``: the known inverse for exp/softplus/sigmoid, else the one given.

    Raises:
        RuntimeError: ``param_transform`` is unknown and no inverse was given, or the given inverse
            disagrees with the known one.
    """
    known = TRANSFORM_REGISTRY.get(param_transform)
    if known is None:
        if inv_param_transform is None:
            raise RuntimeError(
                f"No inverse is known for the transform {param_transform!r}; pass inv_param_transform= as well."
            )
        return inv_param_transform
    if inv_param_transform is not None and inv_param_transform is not known:
        raise RuntimeError(
            f"inv_param_transform {inv_param_transform!r} is not the inverse of {param_transform!r} "
            f"({known!r} is); leave it out."
        )
    return known
