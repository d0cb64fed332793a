"""Every kernel class of ``torchgp.kernels`` (and ``torchgp.kernels.keops``), found without a list.

:func:`discover_kernels` imports every module of the package and walks the subclasses of
:class:`~torchgp.kernels.Kernel`; :func:`kernel_cases` pairs each class with the registered cases
(:mod:`torchgp.testing.registry`) that build it, or with a default case ``cls(batch_shape=b)``. A class the
default cannot build fails its checks with a message saying which case to register: a new kernel is
checked without being listed anywhere.

Example:
    >>> from torchgp.kernels import RBFKernel
    >>> RBFKernel in discover_kernels()
    True
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import torch

from torchgp import kernels as K
from torchgp.testing.cases import KernelCase
from torchgp.testing.registry import registered_cases

__all__ = ["ABSTRACT", "discover_kernels", "default_case", "kernel_cases"]

# Abstract bases: evaluating them raises NotImplementedError (the suite checks that), so they are no kernels.
ABSTRACT = ("Kernel", "StationaryKernel", "KeOpsKernel")


def _import_all(package) -> None:
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        importlib.import_module(info.name)


def discover_kernels() -> list[type]:
    """Every concrete kernel class of ``torchgp.kernels``: its ``__all__`` and the ``Kernel`` subclasses of its modules.

    Every module of the package (subpackages included) is imported first, so a kernel file not (yet)
    exported is found too. Private classes (``_Name``) and :data:`ABSTRACT` bases are left out.

    Returns:
        The classes, sorted by module and name.
    """
    _import_all(K)
    found = {getattr(K, name) for name in K.__all__} | {getattr(K.keops, name) for name in K.keops.__all__}
    stack = [K.Kernel]
    while stack:
        cls = stack.pop()
        found.add(cls)
        stack.extend(cls.__subclasses__())
    return sorted(
        (
            c
            for c in found
            if inspect.isclass(c)
            and issubclass(c, K.Kernel)
            and c.__module__.startswith("torchgp.kernels")
            and not c.__name__.startswith("_")
            and c.__name__ not in ABSTRACT
        ),
        key=lambda c: (c.__module__, c.__name__),
    )


def default_case(cls: type) -> KernelCase:
    """The case ``cls(batch_shape=b)``; building it raises ``TypeError`` naming the fix if ``cls`` needs arguments."""

    def build(d, b):
        try:
            return cls(batch_shape=b)
        except TypeError as err:
            raise TypeError(
                f"The conformance checks cannot build {cls.__module__}.{cls.__name__} as cls(batch_shape=b) "
                f"({err}); add a KernelCase saying how to build it: torchgp.testing.register_kernel_case(...), "
                "or an entry of TABLE in torchgp/testing/registry.py for a kernel of torchgp."
            ) from err

    return KernelCase(f"auto_{cls.__name__}", build)


_COVERED: dict[tuple[int, ...], frozenset] = {}


def _built_type(case: KernelCase) -> type | None:
    try:
        return type(case.build(case.dims, torch.Size()))
    except Exception:  # noqa: BLE001 - a case that cannot build covers no class; its checks report why
        return None


def kernel_cases(discovered: list[type] | None = None) -> list[KernelCase]:
    """The registered cases plus a default case for every discovered class no registered case builds.

    Args:
        discovered: the classes to cover (default :func:`discover_kernels`).

    Returns:
        The cases, registered ones first.
    """
    cases = registered_cases()
    key = tuple(id(c) for c in cases)
    if key not in _COVERED:  # building every case once per set of cases
        _COVERED[key] = frozenset(t for t in map(_built_type, cases) if t is not None)
    covered = _COVERED[key]
    classes = discover_kernels() if discovered is None else discovered
    return cases + [default_case(c) for c in classes if c not in covered]
