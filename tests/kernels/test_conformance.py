"""The kernel conformance case: every kernel class of ``torchgp.kernels``, the same contract.

The checks and the discovery of kernel classes live in :mod:`torchgp.testing` (the same code
``torchgp.check_kernel`` and users run); this file parametrises them over every discovered case and
tests the discovery itself.
"""

from __future__ import annotations

import pytest
import torch

from tests.kernels._factories import CASE_IDS, CASES, DISCOVERED
from torchgp import kernels as K
from torchgp import testing
from torchgp.errors import ShapeError


@pytest.mark.parametrize("check", list(testing.CHECKS))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_conformance(case, check):
    items = testing.run_check(check, case, raise_errors=True)
    failed = [i for i in items if not i.ok]
    assert not failed, "\n".join(f"{i.name}: {i.value:.3g} (tolerance {i.tolerance:.1g}): {i.detail}" for i in failed)
    if all(i.skipped for i in items):
        pytest.skip(items[0].detail)


# ---------------------------------------------------------------------------- discovery
def test_discovery_finds_every_exported_kernel():
    abstract = {getattr(K, n) for n in testing.ABSTRACT if hasattr(K, n)}
    exported = {getattr(K, n) for n in K.__all__} | {getattr(K.keops, n) for n in K.keops.__all__}
    assert exported - abstract <= set(DISCOVERED)
    assert {K.RFFKernel, K.InducingPointKernel, K.keops.RBFKernel, K.keops.MaternKernel} <= set(DISCOVERED)
    assert not abstract & set(DISCOVERED)


def test_every_discovered_kernel_has_a_case_that_builds_it():
    built = {type(c.build(c.dims, torch.Size())) for c in CASES}
    assert set(DISCOVERED) <= built


@pytest.mark.parametrize("name", testing.ABSTRACT)
def test_abstract_bases_are_really_abstract(name):
    # the one list discovery skips holds only classes that have no maths to check
    with pytest.raises(NotImplementedError):
        getattr(K, name)()(torch.randn(3, 2)).to_dense()


def test_a_new_kernel_is_checked_without_being_listed():
    class NewKernel(K.Kernel):
        def forward(self, x1, x2):
            return x1 @ x2.mT

    class NeedsArgs(NewKernel):
        def __init__(self, base):
            super().__init__()

    NewKernel.__module__ = NeedsArgs.__module__ = "torchgp.kernels.new"
    try:
        assert {NewKernel, NeedsArgs} <= set(testing.discover_kernels())
        cases = {c.name: c for c in testing.kernel_cases()}
        assert isinstance(cases["auto_NewKernel"].build(2, torch.Size()), NewKernel)
        assert testing.check_kernel_conformance(cases["auto_NewKernel"], checks=["diag", "symmetric_psd"]).ok
        with pytest.raises(TypeError, match="register_kernel_case"):
            cases["auto_NeedsArgs"].build(2, torch.Size())
        report = testing.check_kernel_conformance(cases["auto_NeedsArgs"], checks=["diag"])
        assert not report.ok and "register_kernel_case" in report.failed[0].detail
    finally:
        NewKernel.__module__ = NeedsArgs.__module__ = __name__  # out of torchgp.kernels again


def test_a_registered_case_covers_its_class():
    class Shifted(K.Kernel):
        def __init__(self, shift, **kwargs):
            super().__init__(**kwargs)
            self.shift = shift

        def forward(self, x1, x2):
            return torch.exp(-(torch.cdist(x1, x2) ** 2)) + self.shift

    Shifted.__module__ = "torchgp.kernels.shifted"
    case = testing.KernelCase("shifted_test_case", lambda d, b: Shifted(0.5, batch_shape=b))
    try:
        testing.register_kernel_case(case)
        names = [c.name for c in testing.kernel_cases()]
        assert "shifted_test_case" in names and "auto_Shifted" not in names
        with pytest.raises(ValueError, match="exists already"):
            testing.register_kernel_case(case)
    finally:
        testing.registry._REGISTERED.remove(case)
        Shifted.__module__ = __name__


def test_table_builds_what_it_says():
    for c in testing.TABLE:
        assert isinstance(c.build(c.dims, torch.Size()), K.Kernel), c.name


# ---------------------------------------------------------------------------- the checks find what is wrong
class _NotSymmetric(K.Kernel):
    def forward(self, x1, x2):
        return torch.exp(-torch.cdist(x1, x2)) + 0.1 * x1[..., :1] * torch.ones_like(x2[..., :1]).mT


class _BatchMixing(K.Kernel):
    def forward(self, x1, x2):
        return torch.exp(-torch.cdist(x1, x2)) * (1 + x1.mean())  # the mean runs over the whole batch


@pytest.mark.parametrize(
    ("kernel", "check", "item"),
    [(_NotSymmetric(), "symmetric_psd", "symmetric"), (_BatchMixing(), "input_batch", "batch = loop")],
)
def test_the_checks_find_broken_kernels(kernel, check, item):
    report = testing.check_kernel_conformance(kernel, checks=[check])
    assert not report[item].ok and "FAIL" in str(report)
    with pytest.raises(testing.ConformanceError, match=item):
        report.raise_if_failed()


def test_an_error_is_a_failed_item_and_unknown_checks_are_refused():
    report = testing.check_kernel_conformance(lambda d, b: K.RBFKernel(ard_num_dims=d + 4), checks=["diag"])
    assert not report.ok and "raised" in report.failed[0].detail
    with pytest.raises(ValueError, match="Unknown checks"):
        testing.check_kernel_conformance(K.RBFKernel, checks=["psd_maybe"])


def test_last_dim_is_batch_with_ard_is_refused():
    # stationary kernels scale each dimension first (tests/kernels/test_last_dim_batch_ard.py); these do not
    for k in (K.PiecewisePolynomialKernel(ard_num_dims=3), K.ScaleKernel(K.PiecewisePolynomialKernel(ard_num_dims=3))):
        with pytest.raises(ShapeError, match="last_dim_is_batch"):
            k(torch.randn(4, 3), last_dim_is_batch=True).to_dense()
