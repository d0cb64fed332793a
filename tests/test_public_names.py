"""Every public name of GPyTorch exists in torchgp and takes GPyTorch's arguments.

Driven by GPyTorch itself: the ``__all__`` of each namespace in ``tests/_gpytorch_surface.py`` and its setting
classes. A name may be absent, or its signature differ, only with a reason in that file's tables.
"""

from __future__ import annotations

import importlib
import inspect
import warnings

import pytest

from tests import _gpytorch_surface as surface

pytest.importorskip("gpytorch")

_P = inspect.Parameter


def _torchgp(path: str):
    try:
        return importlib.import_module("torchgp" + (f".{path}" if path else ""))
    except ImportError:
        return None


def _public_names():
    """``(namespace, name, gpytorch object)`` for every name in GPyTorch's walked ``__all__`` lists."""
    out = []
    for ns in surface.NAMESPACES:
        try:
            mod = surface.import_gpytorch(ns)
        except ImportError:  # pragma: no cover - an optional dependency of GPyTorch is missing
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gpytorch.utils.errors forwards __all__ with a warning
            names = list(getattr(mod, "__all__", ()))
        for name in names:
            if name == "__version__":
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # GPyTorch's deprecated aliases warn when read
                obj = getattr(mod, name, None)
            if obj is not None:
                out.append((ns, name, obj))
    for name in surface.setting_class_names():
        out.append(("settings", name, getattr(surface.import_gpytorch("settings"), name)))
    return out


def _qual(ns, name):
    return f"{ns}.{name}"


def _missing():
    missing = []
    for ns, name, _ in _public_names():
        ours = _torchgp(ns)
        if ours is None:
            if surface.allowed_missing(ns) is None:
                missing.append(ns)
            continue
        if not hasattr(ours, name) and surface.allowed_missing(_qual(ns, name)) is None:
            missing.append(_qual(ns, name))
    return sorted(set(missing))


def test_every_gpytorch_public_name_exists():
    missing = _missing()
    assert not missing, (
        f"torchgp lacks {len(missing)} GPyTorch names (add them, or list them with a reason in "
        f"tests/_gpytorch_surface.py): {missing}"
    )


def test_exception_tables_name_only_real_gpytorch_names_that_are_still_missing():
    """A stale exception (the name now exists in torchgp) hides nothing but should be removed."""
    walked = {_qual(ns, n) for ns, n, _ in _public_names()} | set(surface.NAMESPACES)
    stale, unknown = [], []
    for qual in [*surface.MISSING_BY_FAMILY, *surface.MISSING_OTHER]:
        if qual not in walked:
            unknown.append(qual)
            continue
        ns, _, name = qual.rpartition(".")
        ours = _torchgp(ns) if qual not in surface.NAMESPACES else _torchgp(qual)
        if ours is not None and (qual in surface.NAMESPACES or hasattr(ours, name)):
            stale.append(qual)
    assert not unknown, f"exceptions that are not GPyTorch public names: {unknown}"
    assert not stale, f"exceptions for names torchgp now has (remove them from tests/_gpytorch_surface.py): {stale}"


def _signature(obj):
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if inspect.isclass(obj) and params and params[0].name == "self":
        params = params[1:]
    return params


def signature_problems(theirs_obj, ours_obj) -> list[str]:
    """What GPyTorch call of ``theirs_obj`` would ``ours_obj`` refuse (empty: all accepted)."""
    theirs, ours = _signature(theirs_obj), _signature(ours_obj)
    if theirs is None or ours is None:
        return []
    if inspect.isclass(theirs_obj) and theirs_obj.__init__ is object.__init__:
        return []
    positional_kinds = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)
    ours_positional = [p for p in ours if p.kind in positional_kinds]
    ours_by_name = {p.name: p for p in ours if p.kind != _P.POSITIONAL_ONLY}
    ours_var_args = any(p.kind == _P.VAR_POSITIONAL for p in ours)
    ours_var_kwargs = any(p.kind == _P.VAR_KEYWORD for p in ours)
    problems = []
    i = 0
    for p in theirs:
        if p.kind in positional_kinds:
            if i < len(ours_positional):
                if ours_positional[i].name != p.name and p.kind != _P.POSITIONAL_ONLY:
                    problems.append(f"positional #{i} is {ours_positional[i].name!r}, GPyTorch's is {p.name!r}")
            elif not ours_var_args:
                problems.append(f"positional #{i} {p.name!r} is not accepted")
            i += 1
        elif p.kind == _P.KEYWORD_ONLY and p.name not in ours_by_name and not ours_var_kwargs:
            problems.append(f"keyword {p.name!r} is not accepted")
    # a required parameter of ours that GPyTorch's callers do not pass
    theirs_names = {p.name for p in theirs}
    for p in ours:
        if p.default is _P.empty and p.kind in (*positional_kinds, _P.KEYWORD_ONLY) and p.name not in theirs_names:
            if not any(q.kind in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD) for q in theirs):
                problems.append(f"requires {p.name!r}, which GPyTorch does not have")
    return problems


def test_signatures_accept_gpytorchs_arguments():
    bad = {}
    for ns, name, theirs in _public_names():
        if not (inspect.isclass(theirs) or inspect.isfunction(theirs)):
            continue
        ours_mod = _torchgp(ns)
        ours = getattr(ours_mod, name, None) if ours_mod is not None else None
        qual = _qual(ns, name)
        if ours is None or qual in surface.SIGNATURE_EXCEPTIONS:
            continue
        problems = signature_problems(theirs, ours)
        if problems:
            bad[qual] = problems
    assert not bad, (
        f"{len(bad)} torchgp names refuse GPyTorch's arguments (fix them, or add a reason to "
        f"SIGNATURE_EXCEPTIONS in tests/_gpytorch_surface.py): "
        + "; ".join(f"{k}: {v}" for k, v in sorted(bad.items()))
    )


def test_the_signature_check_itself():
    def theirs(a, b, c=1, *, d=2):
        pass

    def same(a, b, c=1, *, d=2, e=3):
        pass

    def reordered(b, a, c=1, *, d=2):
        pass

    def no_d(a, b, c=1):
        pass

    def forwards(*args, **kwargs):
        pass

    def extra_required(a, b, c=1, *, d=2, z):
        pass

    assert signature_problems(theirs, same) == []
    assert signature_problems(theirs, forwards) == []
    assert len(signature_problems(theirs, reordered)) == 2
    assert signature_problems(theirs, no_d) == ["keyword 'd' is not accepted"]
    assert signature_problems(theirs, extra_required) == ["requires 'z', which GPyTorch does not have"]


def test_signature_exceptions_are_still_needed():
    """An exception whose name now takes GPyTorch's arguments (or is not a GPyTorch name) hides nothing."""
    walked = {_qual(ns, n): obj for ns, n, obj in _public_names()}
    stale = []
    for qual in surface.SIGNATURE_EXCEPTIONS:
        ns, _, name = qual.rpartition(".")
        ours_mod = _torchgp(ns)
        ours = getattr(ours_mod, name, None) if ours_mod is not None else None
        if qual not in walked or ours is None or not signature_problems(walked[qual], ours):
            stale.append(qual)
    assert not stale, (
        f"SIGNATURE_EXCEPTIONS entries whose reason no longer holds (the name is not a GPyTorch public name, is "
        f"missing from torchgp, or now accepts GPyTorch's arguments): delete them from tests/_gpytorch_surface.py: "
        f"{stale}"
    )


def test_every_family_not_built_still_has_a_missing_name():
    unused = sorted(set(surface.FAMILIES_NOT_BUILT) - set(surface.MISSING_BY_FAMILY.values()))
    assert not unused, f"FAMILIES_NOT_BUILT keys no missing name refers to: delete them: {unused}"
    unknown = sorted(set(surface.MISSING_BY_FAMILY.values()) - set(surface.FAMILIES_NOT_BUILT))
    assert not unknown, f"MISSING_BY_FAMILY names families FAMILIES_NOT_BUILT lacks: {unknown}"
