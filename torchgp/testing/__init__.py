r"""Conformance checks for kernels, shared by torchgp's test suite, :func:`torchgp.check_kernel` and users.

Every kernel keeps one contract (:data:`CHECKS`): batch equals loop, ``diag=True`` equals the diagonal of the
full matrix, symmetry, positive semi-definiteness, ``gradcheck`` in float64, finite gradients at zero distance,
float32 and float64, ``active_dims``, ``last_dim_is_batch`` where it applies. :func:`check_kernel_conformance`
runs the checks on one kernel; :func:`kernel_cases` lists a case for every kernel class of ``torchgp.kernels``,
found by :func:`discover_kernels`, so that a new kernel is checked without being listed anywhere. A kernel that
needs constructor arguments says how to build it with :func:`register_kernel_case`.

Example:
    >>> import torch
    >>> from torchgp.kernels import Kernel
    >>> from torchgp.testing import check_kernel_conformance
    >>> class Laplace(Kernel):
    ...     has_lengthscale = True
    ...
    ...     def forward(self, x1, x2):
    ...         return torch.exp(-torch.cdist(x1 / self.lengthscale, x2 / self.lengthscale))
    >>> report = check_kernel_conformance(Laplace, checks=["diag", "symmetric_psd", "input_batch", "kernel_batch"])
    >>> report.ok
    True

    In a test suite, one test per case and check:

    >>> import pytest
    >>> from torchgp.testing import CHECKS, kernel_cases, run_check
    >>> @pytest.mark.parametrize("check", CHECKS)
    ... @pytest.mark.parametrize("case", kernel_cases(), ids=repr)
    ... def test_conformance(case, check):
    ...     assert all(item.ok for item in run_check(check, case, raise_errors=True))
"""

from torchgp.testing.cases import (
    VOCAB,
    KernelCase,
    ball_inputs,
    index_inputs,
    one_hot_inputs,
    randn_inputs,
    randomise,
)
from torchgp.testing.discovery import ABSTRACT, default_case, discover_kernels, kernel_cases
from torchgp.testing.kernel_checks import CHECKS, as_case, check_kernel_conformance, run_check
from torchgp.testing.numerics import close_item, tolerance
from torchgp.testing.registry import TABLE, register_kernel_case, registered_cases
from torchgp.testing.report import CheckItem, CheckReport, ConformanceError

__all__ = [
    "CHECKS",
    "check_kernel_conformance",
    "run_check",
    "as_case",
    "close_item",
    "tolerance",
    "KernelCase",
    "randomise",
    "randn_inputs",
    "ball_inputs",
    "one_hot_inputs",
    "index_inputs",
    "VOCAB",
    "discover_kernels",
    "default_case",
    "kernel_cases",
    "ABSTRACT",
    "TABLE",
    "register_kernel_case",
    "registered_cases",
    "CheckItem",
    "CheckReport",
    "ConformanceError",
]
