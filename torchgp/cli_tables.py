r"""Reading the tables of the ``torchgp`` command (CSV, or Parquet with pyarrow) into numeric columns.

Every problem with the user's file is a :class:`CLIError` naming the file, the line or column, and the fix.
"""

from __future__ import annotations

import csv
import math
import os

import torch

__all__ = ["CLIError", "read_table", "numeric_columns"]

_MISSING = {"", "na", "nan", "null", "none", "n/a"}


class CLIError(Exception):
    """A problem with the user's input; printed as one line, exit status 2."""


# --------------------------------------------------------------------------- reading tables
def read_table(path: str) -> tuple[list[str], list[list[str]]]:
    """Column names and rows of strings from a CSV (or Parquet, with pyarrow) file."""
    if not os.path.exists(path):
        raise CLIError(f"no such file: {path}")
    if path.lower().endswith((".parquet", ".pq")):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise CLIError("reading Parquet needs pyarrow: pip install pyarrow (or convert the file to CSV)") from None
        table = pq.read_table(path)
        columns = list(table.column_names)
        data = [[("" if v is None else str(v)) for v in table.column(c).to_pylist()] for c in columns]
        return columns, [list(row) for row in zip(*data)]
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise CLIError(f"{path} is empty: it needs a header row with column names and at least one data row")
    header = [h.strip() for h in rows[0]]
    if len(rows) == 1:
        raise CLIError(f"{path} has a header ({', '.join(header)}) but no data rows")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise CLIError(f"{path} line {i} has {len(row)} fields but the header has {len(header)}; fix the row")
    return header, rows[1:]


def numeric_columns(
    path: str, header: list[str], rows: list[list[str]], columns: list[str], dropna: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen columns as a float64 ``(n, len(columns))`` tensor and the kept row indices ``(n,)``.

    Raises:
        CLIError: a column is missing, a value is not a number, or rows have missing values without ``dropna``.
    """
    missing = [c for c in columns if c not in header]
    if missing:
        raise CLIError(
            f"column(s) {', '.join(repr(c) for c in missing)} not in {path}; its columns are: {', '.join(header)}"
        )
    index = [header.index(c) for c in columns]
    values, kept, nan_rows = [], [], []
    for r, row in enumerate(rows):
        out = []
        for c, j in zip(columns, index):
            cell = row[j].strip()
            if cell.lower() in _MISSING:
                out.append(math.nan)
                continue
            try:
                out.append(float(cell))
            except ValueError:
                raise CLIError(
                    f"column {c!r} of {path} is not numeric: row {r + 2} holds {cell!r}. Remove or encode that column "
                    "(choose others with --features)"
                ) from None
        if any(math.isnan(v) or math.isinf(v) for v in out):
            nan_rows.append(r + 2)
            if dropna:
                continue
        values.append(out)
        kept.append(r)
    if nan_rows and not dropna:
        shown = ", ".join(map(str, nan_rows[:5])) + (" ..." if len(nan_rows) > 5 else "")
        raise CLIError(
            f"{len(nan_rows)} row(s) of {path} have missing or non-finite values (lines {shown}); "
            "pass --dropna to drop them, or fill them in"
        )
    if not values:
        raise CLIError(f"no rows of {path} are left after dropping the {len(nan_rows)} with missing values")
    return torch.tensor(values, dtype=torch.float64), torch.tensor(kept)
