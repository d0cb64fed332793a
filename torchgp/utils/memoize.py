"""Per-object caches for methods (``gpytorch.utils.memoize``; :func:`cached` is ``torchgp.utils.cached``).

A cached value lives in the object's ``_memoize_cache`` dict under ``(name, args, pickled kwargs)``,
or under ``name`` alone for ``ignore_args=True``; :func:`clear_cache_hook` empties it.
"""

from __future__ import annotations

import functools
import pickle

from torchgp.utils.errors import CachingError

__all__ = [
    "cached",
    "add_to_cache",
    "get_from_cache",
    "pop_from_cache",
    "pop_from_cache_ignore_args",
    "clear_cache_hook",
]


def _store(obj) -> dict:
    store = getattr(obj, "_memoize_cache", None)
    if store is None:
        store = {}
        obj._memoize_cache = store
    return store


def _key(name, args, kwargs):
    return (name, args, pickle.dumps(kwargs))


def _missing(name):
    return CachingError(f"the object has no cached value {name!r}; compute it first or add it with add_to_cache.")


def cached(method=None, name: str | None = None, ignore_args: bool = False):
    """Decorate a method so that its result is computed once per object (and per arguments).

    Args:
        method: the method (the decorator may also be called as ``@cached(name="...")``).
        name: cache entry name (default: the method's qualified name), so other code can reach it.
        ignore_args: one entry whatever the arguments.

    Example:
        >>> class A:
        ...     @cached(name="square")
        ...     def f(self, x):
        ...         return x * x
        >>> a = A(); a.f(3), get_from_cache(a, "square", 3)
        (9, 9)
    """
    if method is None:
        return functools.partial(cached, name=name, ignore_args=ignore_args)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        entry = name if name is not None else method.__qualname__
        store = _store(self)
        key = entry if ignore_args else _key(entry, args, kwargs)
        if key not in store:
            store[key] = method(self, *args, **kwargs)
        return store[key]

    return wrapper


def add_to_cache(obj, name: str, val, *args, **kwargs):
    """Store ``val`` as the cached value of ``name`` for these arguments; returns ``val``."""
    _store(obj)[_key(name, args, kwargs)] = val
    return val


def get_from_cache(obj, name: str, *args, **kwargs):
    """The cached value of ``name`` for these arguments; :class:`CachingError` if there is none."""
    try:
        return obj._memoize_cache[_key(name, args, kwargs)]
    except (AttributeError, KeyError):
        raise _missing(name) from None


def pop_from_cache(obj, name: str, *args, **kwargs):
    """Remove and return the cached value of ``name`` for these arguments."""
    try:
        return obj._memoize_cache.pop(_key(name, args, kwargs))
    except (AttributeError, KeyError):
        raise _missing(name) from None


def pop_from_cache_ignore_args(obj, name: str):
    """Remove and return the value cached by an ``ignore_args=True`` method."""
    try:
        return obj._memoize_cache.pop(name)
    except (AttributeError, KeyError):
        raise _missing(name) from None


def clear_cache_hook(module, *args, **kwargs) -> None:
    """Empty ``module``'s cache (usable as a forward/backward/state-dict hook)."""
    module._memoize_cache = {}
