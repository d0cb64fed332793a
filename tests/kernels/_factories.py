"""The conformance suite's kernel cases, from :mod:`torchgp.testing` (kept importable for the other test files).

:data:`CASES` is one case for every kernel class of ``torchgp.kernels``: the registered constructors and
variants (``torchgp.testing.TABLE``) plus a default ``cls(batch_shape=b)`` for every other discovered class.
"""

from __future__ import annotations

from torchgp.testing import ABSTRACT, TABLE, KernelCase, discover_kernels, kernel_cases, randomise  # noqa: F401
from torchgp.testing.discovery import default_case

DISCOVERED = discover_kernels()
CASES = kernel_cases(DISCOVERED)
CASE_IDS = [c.name for c in CASES]

discover = discover_kernels
_default_case = default_case
