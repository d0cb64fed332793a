"""Helpers for deprecating functions, keyword arguments and methods (``gpytorch.utils.deprecation``).

Each one warns with ``DeprecationWarning`` naming the old and the new spelling.
"""

from __future__ import annotations

import functools
import warnings

import torch

__all__ = ["bool_compat", "DeprecationError"]

bool_compat = torch.bool  # the dtype of comparison results


class DeprecationError(Exception):
    """A removed feature was used."""


def _deprecated_function_for(old_function_name: str, function):
    """``function`` under its old name: calling it warns and forwards every argument."""

    @functools.wraps(function)
    def forward(*args, **kwargs):
        warnings.warn(
            f"{old_function_name} is deprecated; use {function.__name__} instead.", DeprecationWarning, stacklevel=2
        )
        return function(*args, **kwargs)

    return forward


def _deprecate_kwarg(kwargs: dict, old_kw: str, new_kw: str, new_kw_value):
    """The value of ``new_kw``, taken from ``kwargs[old_kw]`` (with a warning) if that was given.

    Raises:
        ValueError: both the old and the new keyword were given.
    """
    old = kwargs.get(old_kw)
    if old is None:
        return new_kw_value
    warnings.warn(f"the {old_kw}= argument is deprecated; use {new_kw}= instead.", DeprecationWarning, stacklevel=3)
    if new_kw_value is not None:
        raise ValueError(f"pass only one of {old_kw}= (deprecated) and {new_kw}=.")
    return old


def _deprecate_kwarg_with_transform(kwargs: dict, old_kw: str, new_kw: str, new_kw_value, transform):
    """As :func:`_deprecate_kwarg`, converting the old keyword's value with ``transform``."""
    old = kwargs.get(old_kw)
    if old is None:
        return new_kw_value
    warnings.warn(f"the {old_kw}= argument is deprecated; use {new_kw}= instead.", DeprecationWarning, stacklevel=3)
    return transform(old)


def _deprecated_renamed_method(cls, old_method_name: str, new_method_name: str):
    """Add ``cls.<old_method_name>``, which warns and calls ``self.<new_method_name>``; returns ``cls``."""

    def old(self, *args, **kwargs):
        warnings.warn(
            f"{old_method_name} is deprecated; use {new_method_name} instead.", DeprecationWarning, stacklevel=2
        )
        return getattr(self, new_method_name)(*args, **kwargs)

    old.__name__ = old_method_name
    setattr(cls, old_method_name, old)
    return cls


def _deprecate_renamed_methods(cls, **renamed_methods):
    """:func:`_deprecated_renamed_method` for each ``old=new`` pair; returns ``cls``."""
    for old_name, new_name in renamed_methods.items():
        _deprecated_renamed_method(cls, old_name, new_name)
    return cls
