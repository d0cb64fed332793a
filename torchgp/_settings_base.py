"""The machinery of :mod:`torchgp.settings`: a setting is a class whose value lives in a ContextVar.

:class:`_Setting` holds any value; :class:`_Flag` a bool, :class:`_Positive` / :class:`_NonNegative` a number
with its sign checked, :class:`_DtypeValue` one value per floating dtype (as GPyTorch's jitters). The settings
themselves are declared in :mod:`torchgp.settings`.
"""

from __future__ import annotations

import contextvars
import threading

import torch

_UNSET = object()  # the ContextVar holds this until a ``with`` block sets a value


class _Setting:
    """A value held in a ContextVar; instances are context managers that set it.

    Outside every ``with`` block a setting reads ``cls._global_value`` (its default), which code written
    for GPyTorch may assign (``settings.max_cholesky_size._global_value = 2000``, or ``_set_value``); that
    changes the value for every thread.
    """

    _default = None
    _var: contextvars.ContextVar

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._var = contextvars.ContextVar(f"torchgp.settings.{cls.__name__}", default=_UNSET)
        if "_global_value" not in cls.__dict__:
            cls._global_value = cls._default

    def __init__(self, value=None):
        self._new = self._validate(value)
        self._tokens = {}  # per thread: one instance may be entered from several threads at once

    @classmethod
    def _validate(cls, value):
        return value

    @classmethod
    def value(cls):
        v = cls._var.get()
        return cls._global_value if v is _UNSET else v

    @classmethod
    def _set_value(cls, value) -> None:
        """Set the value outside every ``with`` block, for all threads (GPyTorch's classmethod)."""
        cls._global_value = cls._validate(value)

    def __enter__(self):
        self._tokens.setdefault(threading.get_ident(), []).append(self._var.set(self._new))
        return self

    def __exit__(self, *exc):
        stack = self._tokens[threading.get_ident()]
        self._var.reset(stack.pop())
        if not stack:
            del self._tokens[threading.get_ident()]
        return False


class _Flag(_Setting):
    """A boolean setting: ``with flag():`` / ``with flag(False):``; ``flag.on()``."""

    _default = False

    def __init__(self, state: bool = True):
        super().__init__(bool(state))

    @classmethod
    def on(cls) -> bool:
        return bool(cls.value())

    @classmethod
    def off(cls) -> bool:
        return not cls.value()

    @classmethod
    def is_default(cls) -> bool:
        """Whether the flag has its default state: no ``with`` block sets it and ``_set_state`` did not change it."""
        return cls._var.get() is _UNSET and bool(cls._global_value) == bool(cls._default)

    @classmethod
    def _set_state(cls, state) -> None:
        """Set the state outside every ``with`` block, for all threads (GPyTorch's classmethod)."""
        cls._global_value = bool(state)


class _Positive(_Setting):
    @classmethod
    def _validate(cls, value):
        if value is None or not value > 0:
            raise ValueError(f"settings.{cls.__name__} must be positive; got {value!r}.")
        return value


class _NonNegative(_Setting):
    """A size or count for which 0 means "never" (e.g. ``max_cholesky_size(0)``: always iterative)."""

    @classmethod
    def _validate(cls, value):
        if value is None or not value >= 0:
            raise ValueError(f"settings.{cls.__name__} must be >= 0; got {value!r}.")
        return value


class _DtypeValue(_Setting):
    """A float setting with one value for float32/half and one for float64."""

    _float = 1e-6
    _double = 1e-8

    _half = None  # None: half precision uses the float32 value

    def __init__(self, float_value=None, double_value=None, half_value=None):
        if float_value is not None and double_value is None and half_value is None:
            double_value = float_value  # one value given: use it for every dtype
        f, d, h = self._current()
        self._new = (
            f if float_value is None else float(float_value),
            d if double_value is None else float(double_value),
            h if half_value is None else float(half_value),
        )
        self._tokens = {}  # per thread: one instance may be entered from several threads at once

    def __init_subclass__(cls, **kwargs):
        cls._default = (cls._float, cls._double, cls._half)
        super().__init_subclass__(**kwargs)
        # GPyTorch's class attributes, read (and assignable) outside every ``with`` block
        cls._global_float_value, cls._global_double_value, cls._global_half_value = cls._default

    @classmethod
    def _current(cls):
        v = cls._var.get()
        return (cls._global_float_value, cls._global_double_value, cls._global_half_value) if v is _UNSET else v

    @classmethod
    def value(cls, dtype: torch.dtype | None = None) -> float:
        """The value for ``dtype`` (a dtype or a tensor; default float32)."""
        if torch.is_tensor(dtype):
            dtype = dtype.dtype
        f, d, h = cls._current()
        if dtype == torch.float64:
            return d
        if dtype in (torch.float16, torch.bfloat16):
            return f if h is None else h
        return f

    @classmethod
    def _set_value(cls, float_value=None, double_value=None, half_value=None) -> None:
        """Set the values outside every ``with`` block, for all threads (GPyTorch's classmethod)."""
        if float_value is not None:
            cls._global_float_value = float(float_value)
        if double_value is not None:
            cls._global_double_value = float(double_value)
        if half_value is not None:
            cls._global_half_value = float(half_value)
