"""GPyTorch's module paths resolve in torchgp (``from torchgp.kernels.rbf_kernel import RBFKernel``).

Walks every module of the installed GPyTorch; paths that need not resolve are listed with their reason in
``tests/_gpytorch_surface.py``. For each path, the public classes and functions GPyTorch defines there must
be attributes of torchgp's module (unless that name is an allowed-missing one).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import subprocess
import sys

import pytest

import torchgp
from tests import _gpytorch_surface as surface
from torchgp import _module_paths

gpytorch = pytest.importorskip("gpytorch")


def _gpytorch_modules():
    return sorted(m.name for m in pkgutil.walk_packages(gpytorch.__path__, "gpytorch.", onerror=lambda name: None))


def _not_provided(path):
    return next(
        (r for p, r in surface.MODULE_PATHS_NOT_PROVIDED.items() if path == p or path.startswith(p + ".")), None
    )


def _defined_names(path):
    """Public names GPyTorch defines in the (non-package) module ``path`` and exports from its namespace."""
    mod = surface.import_gpytorch(path[len("gpytorch.") :])
    if hasattr(mod, "__path__"):
        return []  # a namespace: its __all__ is walked by test_public_names.py
    exported = set(getattr(surface.import_gpytorch(_namespace_of(path)), "__all__", ()))
    return [
        n
        for n, v in vars(mod).items()
        if n in exported and (inspect.isclass(v) or inspect.isfunction(v)) and v.__module__ == path
    ]


def _namespace_of(path):
    """The GPyTorch namespace a module path's names are exported from (``gpytorch.kernels.rbf_kernel`` -> kernels)."""
    parts = path.split(".")[1:-1]
    return ".".join(parts)


def test_every_gpytorch_module_path_resolves_with_its_names():
    unresolved, missing_names = [], []
    for path in _gpytorch_modules():
        if _not_provided(path):
            continue
        ours_path = "torchgp" + path[len("gpytorch") :]
        try:
            ours = importlib.import_module(ours_path)
        except ImportError as err:
            unresolved.append(f"{ours_path} ({err})")
            continue
        for name in _defined_names(path):
            qual = f"{_namespace_of(path)}.{name}"
            if hasattr(ours, name) or surface.allowed_missing(qual) is not None:
                continue
            if f"{ours_path}.{name}" not in surface.PATH_NAMES_ELSEWHERE:
                missing_names.append(f"{ours_path}.{name}")
    assert not unresolved, f"GPyTorch module paths that do not import from torchgp: {unresolved}"
    assert not missing_names, f"names GPyTorch defines at these paths that torchgp's lack: {missing_names}"


def test_table_entries_are_gpytorch_paths_and_the_exclusions_are_too():
    gp = set(_gpytorch_modules())
    table = {"gpytorch" + p[len("torchgp") :] for p in _module_paths.MODULE_PATHS}
    assert table <= gp, f"table entries GPyTorch does not have: {sorted(table - gp)}"
    for prefix in surface.MODULE_PATHS_NOT_PROVIDED:
        assert any(p == prefix or p.startswith(prefix + ".") for p in gp), prefix


def test_alias_module_is_a_real_module_with_the_namespaces_attributes():
    from torchgp.kernels.rbf_kernel import RBFKernel
    from torchgp.likelihoods.gaussian_likelihood import GaussianLikelihood

    rbf_kernel = sys.modules["torchgp.kernels.rbf_kernel"]
    assert RBFKernel is torchgp.kernels.RBFKernel
    assert GaussianLikelihood is torchgp.likelihoods.GaussianLikelihood
    assert torchgp.variational.variational_strategy.VariationalStrategy is torchgp.variational.VariationalStrategy
    assert isinstance(rbf_kernel, type(sys))
    assert rbf_kernel.__name__ == "torchgp.kernels.rbf_kernel"
    assert "RBFKernel" in dir(rbf_kernel)
    assert importlib.util.find_spec("torchgp.kernels.rbf_kernel") is not None
    with pytest.raises(AttributeError, match="alias of 'torchgp.kernels'"):
        rbf_kernel.NoSuchKernel  # noqa: B018
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("torchgp.kernels.no_such_kernel")


def test_real_files_win_over_the_table():
    import torchgp.models.exact_gp as exact_gp

    assert exact_gp.__file__.endswith("exact_gp.py")  # a table entry, and a real file: the file is imported
    assert torchgp.metrics.metrics.__file__.endswith("metrics.py")


def test_finder_installed_once_in_a_fresh_interpreter():
    code = (
        "import sys, importlib, torchgp; from torchgp import _module_paths as m; m.install(); "
        "print(sum(isinstance(f, m._AliasFinder) for f in sys.meta_path)); "
        "import torchgp.mlls.exact_marginal_log_likelihood as e; print(e.ExactMarginalLogLikelihood.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["1", "ExactMarginalLogLikelihood"]


def test_a_single_file_namespace_gets_its_paths_too(monkeypatch):
    import types

    fake = types.ModuleType("torchgp._single_file_namespace")
    fake.Thing = object()
    fake.__all__ = ["Thing"]
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    monkeypatch.setitem(_module_paths._TABLE, fake.__name__, ("thing_module",))
    monkeypatch.setitem(_module_paths.MODULE_PATHS, f"{fake.__name__}.thing_module", fake.__name__)
    monkeypatch.delitem(sys.modules, f"{fake.__name__}.thing_module", raising=False)
    _module_paths.install()
    assert fake.__path__ == []
    alias = importlib.import_module(f"{fake.__name__}.thing_module")
    assert alias.Thing is fake.Thing and alias.__all__ == ["Thing"]
    sys.modules.pop(f"{fake.__name__}.thing_module", None)


def test_module_path_exclusions_are_still_needed():
    """A path listed as not provided that torchgp now imports hides nothing: its entry should be deleted."""
    resolved = []
    for prefix in surface.MODULE_PATHS_NOT_PROVIDED:
        try:
            importlib.import_module("torchgp" + prefix[len("gpytorch") :])
        except ImportError:
            continue
        resolved.append(prefix)
    assert not resolved, (
        f"MODULE_PATHS_NOT_PROVIDED entries torchgp now imports: delete them from tests/_gpytorch_surface.py: "
        f"{resolved}"
    )


def test_path_names_elsewhere_are_still_needed():
    """Each entry must be a name GPyTorch defines at that path, still absent from torchgp's module there."""
    stale = []
    for entry in surface.PATH_NAMES_ELSEWHERE:
        ours_path, _, name = entry.rpartition(".")
        theirs_path = "gpytorch" + ours_path[len("torchgp") :]
        try:
            defined = name in _defined_names(theirs_path)
        except ImportError:
            defined = False
        try:
            present = hasattr(importlib.import_module(ours_path), name)
        except ImportError:
            present = False
        if not defined or present:
            stale.append(entry)
    assert not stale, (
        "PATH_NAMES_ELSEWHERE entries whose reason no longer holds (GPyTorch does not define the name at that "
        f"path, or torchgp's module there now has it): delete them from tests/_gpytorch_surface.py: {stale}"
    )
