r"""Checks for user kernels and models: ``check_kernel(kernel)`` and ``check_gradients(mll)``.

``check_kernel`` evaluates a kernel on sample inputs (in float64, on a copy) and reports whether
it is symmetric, positive semi-definite (smallest eigenvalue), whether ``diag=True`` agrees with
the diagonal of the full matrix, ``k(X) == k(X, X)``, a batch of inputs gives the same as each
member alone, and autograd gradients agree with central finite differences. ``check_gradients``
compares the autograd gradient of a model's loss with central differences in every raw parameter.

The comparisons are those of :mod:`torchgp.testing`, whose :func:`~torchgp.testing.check_kernel_conformance`
runs the whole contract the library's own kernels are tested against (dtypes, kernel batches, ``active_dims``,
``gradcheck``, zero distance, ...).

Example:
    >>> import torchgp
    >>> report = check_kernel(torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel()))
    >>> report.ok
    True
"""

from __future__ import annotations

import copy

import torch

from torchgp.testing.kernel_checks import input_dim
from torchgp.testing.numerics import finite_difference_items, psd_item, rel_item
from torchgp.testing.report import CheckItem, CheckReport

__all__ = ["CheckItem", "CheckReport", "check_kernel", "check_gradients"]


def _dense(kernel, x1, x2=None) -> torch.Tensor:
    out = kernel(x1, x2)
    return out.to_dense() if hasattr(out, "to_dense") else out


def check_kernel(kernel, X: torch.Tensor | None = None, tol: float = 1e-6, seed: int = 0) -> CheckReport:
    r"""Check a kernel's matrices and gradients on sample inputs.

    Args:
        kernel: a torchgp kernel (it is copied and converted to float64; the original is untouched).
        X: sample inputs ``(n, d)``; default 12 standard-normal points in the kernel's input dimension.
        tol: relative tolerance of each check.
        seed: seed of the default inputs and of the batch check's second input set.

    Returns:
        A :class:`CheckReport` with the items ``symmetric``, ``psd`` (value: smallest eigenvalue
        relative to the largest), ``diag``, ``k(X) == k(X, X)``, ``batch`` and one
        ``gradient <raw parameter>`` per parameter.

    Shapes:
        ``X (n, d)`` (a 1-D ``X`` is ``(n, 1)``).

    Example:
        >>> import torch, torchgp
        >>> class Bad(torchgp.kernels.Kernel):
        ...     def forward(self, x1, x2, diag=False, **params):
        ...         if diag:
        ...             return torch.full(x1.shape[:-1], 2.0, dtype=x1.dtype)
        ...         return torch.exp(-torch.cdist(x1, x2) ** 2)
        >>> check_kernel(Bad())["diag"].ok
        False
    """
    gen = torch.Generator().manual_seed(seed)
    k = copy.deepcopy(kernel).double()
    if X is None:
        X = torch.randn(12, input_dim(k), generator=gen, dtype=torch.float64)
    X = X.to(torch.float64)
    X = X.unsqueeze(-1) if X.dim() == 1 else X
    report = CheckReport(f"check_kernel({type(kernel).__name__})")
    add = report.items.append
    with torch.no_grad():
        K = _dense(k, X)
        finite = bool(torch.all(torch.isfinite(K)))
        add(CheckItem("finite", finite, 0.0 if finite else 1.0, 0.0, "k(X) holds NaN or inf"))
        add(rel_item("symmetric", K, K.mT, tol, "k(X)[i, j] != k(X)[j, i]: the forward is not symmetric in x1 and x2"))
        add(psd_item(K, tol * 10, floor=1e-300))
        add(
            rel_item(
                "diag",
                k(X, diag=True),
                K.diagonal(),
                tol,
                "k(X, diag=True) differs from the diagonal of k(X): fix the forward's diag branch (or remove it; "
                "the base class then computes the diagonal pairwise)",
            )
        )
        detail = "the forward treats x2 = None / x2 is x1 differently from an equal copy"
        add(rel_item("k(X) == k(X, X)", K, _dense(k, X, X), tol, detail))
        X2 = torch.randn(X.shape, generator=gen, dtype=torch.float64)
        try:
            Kb = _dense(k, torch.stack([X, X2]))
            item = rel_item("batch", Kb, torch.stack([K, _dense(k, X2)]), tol, "")
            item.detail = (
                "a batch (2, n, d) of inputs differs from each member alone: the forward mixes batch dimensions"
            )
        except Exception as e:  # noqa: BLE001 - any failure here is the finding
            item = CheckItem(
                "batch", False, float("inf"), tol, f"batched inputs (2, n, d) raised {type(e).__name__}: {e}"
            )
        add(item)
    params = [(name, p) for name, p in k.named_parameters() if p.requires_grad]
    if params:
        weights = torch.randn(K.shape, generator=gen, dtype=torch.float64)

        def functional():
            return (_dense(k, X) * weights).sum() + (k(X, diag=True) * weights.diagonal()).sum()

        report.items.extend(finite_difference_items(params, functional, max(tol, 1e-5), 1e-6, 20))
    return report


def check_gradients(mll, tol: float = 1e-5, h: float = 1e-6, max_entries: int = 20) -> CheckReport:
    r"""Compare the autograd gradient of ``-mll(model(X), y)`` with central finite differences.

    Every trainable raw parameter of the model behind ``mll`` is perturbed (up to ``max_entries``
    entries each), on a float64 copy of the model.

    Args:
        mll: an exact marginal log-likelihood (``mll.model`` holds its training data).
        tol: tolerance on ``max |autograd - fd| / max(1, max |fd|)`` per parameter.
        h: finite-difference step in raw-parameter space.
        max_entries: entries checked per parameter.

    Returns:
        A :class:`CheckReport` with one ``gradient <name>`` item per raw parameter.

    Raises:
        ValueError: the model holds no training data.
    """
    mll = copy.deepcopy(mll).double()
    model = mll.model
    if getattr(model, "train_inputs", None) is None:
        raise ValueError("check_gradients needs a model holding its training data (an ExactGP with train_inputs).")
    mll.train()

    def loss():
        out = -mll(model(*model.train_inputs), model.train_targets)
        return out.sum()

    params = [(name, p) for name, p in mll.named_parameters() if p.requires_grad]
    report = CheckReport(f"check_gradients({type(model).__name__})")
    report.items.extend(finite_difference_items(params, loss, tol, h, max_entries))
    return report
