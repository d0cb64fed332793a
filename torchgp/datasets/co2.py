"""The Mauna Loa weekly CO2 record (Keeling & Whorf 2004), bundled as a CSV."""

from __future__ import annotations

import csv
from importlib import resources

import torch


def load_co2(dtype: torch.dtype = torch.float64, dropna: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Weekly CO2 concentration at Mauna Loa, 1958–2001.

    Args:
        dtype: dtype of the returned tensors.
        dropna: drop the weeks without a measurement.

    Returns:
        ``(year (n,), co2_ppm (n,))``: decimal year and concentration in ppm (NaN where missing
        if ``dropna`` is False). n = 2225 with ``dropna``.
    """
    path = resources.files("torchgp.datasets") / "mauna_loa_co2.csv"
    years, values = [], []
    with path.open() as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        for row in rows:
            value = float(row["co2"]) if row["co2"] else float("nan")
            if dropna and value != value:
                continue
            years.append(float(row["year"]))
            values.append(value)
    return torch.tensor(years, dtype=dtype), torch.tensor(values, dtype=dtype)
