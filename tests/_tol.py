"""Tolerances keyed on dtype: the one place tests take their rtol/atol from."""

from __future__ import annotations

import numpy as np
import torch

_TOL = {
    torch.float32: {"rtol": 1e-4, "atol": 1e-5},
    torch.float64: {"rtol": 1e-8, "atol": 1e-8},
}


def tol(dtype: torch.dtype = torch.float64, loose: float = 1.0) -> dict:
    """``{"rtol", "atol"}`` for comparisons in ``dtype`` (``loose`` multiplies both)."""
    t = _TOL[dtype]
    return {"rtol": t["rtol"] * loose, "atol": t["atol"] * loose}


def assert_close(actual, expected, dtype: torch.dtype | None = None, loose: float = 1.0) -> None:
    """``torch.testing.assert_close`` with the dtype's tolerances (dtypes may differ: numpy refs)."""
    actual = torch.as_tensor(actual)
    if not torch.is_tensor(expected):
        expected = torch.tensor(np.array(expected), dtype=actual.dtype)  # copies NumPy references
    expected = expected.to(actual.dtype)
    torch.testing.assert_close(actual, expected, **tol(dtype or actual.dtype, loose))


def psd_tol(dtype: torch.dtype) -> float:
    """Relative tolerance on the smallest eigenvalue of a PSD matrix (roundoff can make it slightly negative)."""
    return 1e-4 if dtype == torch.float32 else 1e-10
