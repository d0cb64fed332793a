r"""Numerical comparisons behind the checks: tolerances keyed on dtype, closeness, PSD, finite differences.

Example:
    >>> import torch
    >>> close_item("same", torch.ones(3), torch.ones(3) + 1e-12, "differ").ok
    True
"""

from __future__ import annotations

import torch

from torchgp.testing.report import CheckItem

__all__ = ["tolerance", "close_item", "rel_error", "rel_item", "psd_item", "finite_difference_items"]

_TOL = {torch.float32: (1e-4, 1e-5), torch.float64: (1e-8, 1e-8)}


def tolerance(dtype: torch.dtype, loose: float = 1.0) -> tuple[float, float]:
    """``(rtol, atol)`` for comparisons in ``dtype`` (``loose`` multiplies both)."""
    rtol, atol = _TOL.get(dtype, _TOL[torch.float32])
    return rtol * loose, atol * loose


def close_item(name: str, actual, expected, detail: str, loose: float = 1.0) -> CheckItem:
    """Whether ``actual`` equals ``expected`` (same shape, ``|a - b| <= atol + rtol |b|``); value ``max |a - b|``."""
    actual, expected = torch.as_tensor(actual).detach(), torch.as_tensor(expected).detach()
    rtol, atol = tolerance(actual.dtype, loose)
    if actual.shape != expected.shape:
        return CheckItem(
            name, False, float("inf"), atol, f"{detail} (shapes {tuple(actual.shape)} and {tuple(expected.shape)})"
        )
    expected = expected.to(actual.dtype)
    ok = bool(torch.isclose(actual, expected, rtol=rtol, atol=atol).all())
    err = float((actual - expected).abs().max()) if actual.numel() else 0.0
    return CheckItem(name, ok, err, atol + rtol * (float(expected.abs().max()) if expected.numel() else 0.0), detail)


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max(1, max |a|, max |b|)`` (0 for empty tensors)."""
    if not a.numel():
        return 0.0
    scale = max(1.0, float(a.abs().max()), float(b.abs().max()))
    return float((a - b).abs().max()) / scale


def rel_item(name: str, a: torch.Tensor, b: torch.Tensor, tol: float, detail: str) -> CheckItem:
    """Whether :func:`rel_error` of ``a`` and ``b`` is at most ``tol``."""
    err = rel_error(a.detach(), b.detach())
    return CheckItem(name, err <= tol, err, tol, detail)


def psd_item(K: torch.Tensor, rel_tol: float, floor: float = 1.0) -> CheckItem:
    """Smallest eigenvalue of ``K (n, n)`` relative to ``max(largest |eigenvalue|, floor)``, at least ``-rel_tol``."""
    finite = bool(torch.all(torch.isfinite(K)))
    eig = torch.linalg.eigvalsh(0.5 * (K + K.mT)) if finite else torch.tensor([float("nan")])
    scale = max(float(eig.abs().max()), floor) if finite else 1.0
    rel = float(eig.min()) / scale
    return CheckItem(
        "psd",
        rel >= -rel_tol,
        rel,
        rel_tol,
        f"smallest eigenvalue {float(eig.min()):.3g} (largest {float(eig.abs().max()):.3g}): the kernel is not positive "
        "semi-definite; it cannot be a covariance (check signs, and that sums/products of valid kernels are used)",
    )


def finite_difference_items(params, loss_fn, tol: float, h: float, max_entries: int) -> list[CheckItem]:
    """Autograd gradient of the scalar ``loss_fn()`` vs central differences, one item per parameter.

    Args:
        params: ``(name, parameter)`` pairs; up to ``max_entries`` entries of each are perturbed in place
            by ``±h`` (and restored).
        loss_fn: the scalar function of the parameters.
        tol: tolerance on ``max |autograd - fd| / max(1, max |fd|)``.
        h: the finite-difference step.
        max_entries: entries checked per parameter.

    Returns:
        One ``gradient <name>`` item per parameter.
    """
    items = []
    loss = loss_fn()
    grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
    for (name, p), g in zip(params, grads):
        g = torch.zeros_like(p) if g is None else g
        flat = p.detach().view(-1)
        fd = torch.zeros(min(flat.numel(), max_entries), dtype=torch.float64)
        with torch.no_grad():
            for i in range(fd.numel()):
                original = flat[i].item()
                flat[i] = original + h
                up = float(loss_fn())
                flat[i] = original - h
                down = float(loss_fn())
                flat[i] = original
                fd[i] = (up - down) / (2 * h)
        ad = g.detach().reshape(-1)[: fd.numel()].to(torch.float64)
        err = float((ad - fd).abs().max() / max(1.0, float(fd.abs().max()))) if fd.numel() else 0.0
        items.append(
            CheckItem(
                f"gradient {name}",
                err <= tol,
                err,
                tol,
                f"autograd {ad.tolist()[:4]} vs finite differences {fd.tolist()[:4]}: the forward uses a non-differentiable "
                "operation (in-place edit, .detach(), .item(), clamp at the evaluation point) or a hand-written backward is wrong",
            )
        )
    return items
