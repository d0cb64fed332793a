r"""Checks for user kernels and models: ``check_kernel(kernel)`` and ``check_gradients(mll)``.

``check_kernel`` evaluates a kernel on sample inputs (in float64, on a copy) and reports whether
it is symmetric, positive semi-definite (smallest eigenvalue), whether ``diag=True`` agrees with
the diagonal of the full matrix, ``k(X) == k(X, X)``, a batch of inputs gives the same as each
member alone, and autograd gradients agree with central finite differences. ``check_gradients``
compares the autograd gradient of a model's loss with central differences in every raw parameter.

Example:
    >>> import torchgp
    >>> report = check_kernel(torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel()))
    >>> report.ok
    True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

__all__ = ["CheckItem", "CheckReport", "check_kernel", "check_gradients"]


@dataclass
class CheckItem:
    """One check: its name, whether it passed, the measured value, the tolerance and a remedy."""

    name: str
    ok: bool
    value: float
    tolerance: float
    detail: str = ""


@dataclass
class CheckReport:
    """The outcome of a group of checks; ``ok`` is True when every check passed.

    ``str(report)`` is a readable table; ``report["psd"]`` gets one item by name.
    """

    subject: str
    items: list[CheckItem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(item.ok for item in self.items)

    @property
    def failed(self) -> list[CheckItem]:
        return [item for item in self.items if not item.ok]

    def __getitem__(self, name: str) -> CheckItem:
        for item in self.items:
            if item.name == name:
                return item
        raise KeyError(f"no check named {name!r}; checks: {[i.name for i in self.items]}")

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        width = max((len(i.name) for i in self.items), default=4)
        lines = [f"{self.subject}: {'all checks passed' if self.ok else f'{len(self.failed)} check(s) FAILED'}"]
        for i in self.items:
            mark = "ok  " if i.ok else "FAIL"
            lines.append(
                f"  [{mark}] {i.name:<{width}}  {i.value:.3g} (tolerance {i.tolerance:.1g})"
                + (f"  {i.detail}" if i.detail and not i.ok else "")
            )
        return "\n".join(lines)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = max(1.0, float(a.abs().max()) if a.numel() else 1.0, float(b.abs().max()) if b.numel() else 1.0)
    return float((a - b).abs().max()) / scale if a.numel() else 0.0


def _input_dim(kernel) -> int:
    dims = [1]
    for m in kernel.modules():
        if getattr(m, "ard_num_dims", None):
            dims.append(int(m.ard_num_dims))
        if getattr(m, "active_dims", None) is not None and m.active_dims.numel():
            dims.append(int(m.active_dims.max()) + 1)
    return max(dims)


def _dense(kernel, x1, x2=None) -> torch.Tensor:
    out = kernel(x1, x2)
    return out.to_dense() if hasattr(out, "to_dense") else out


def _finite_difference_items(subject: str, params, loss_fn, tol: float, h: float, max_entries: int) -> list[CheckItem]:
    """Autograd gradient of ``loss_fn()`` vs central differences, one item per parameter."""
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
        X = torch.randn(12, _input_dim(k), generator=gen, dtype=torch.float64)
    X = X.to(torch.float64)
    X = X.unsqueeze(-1) if X.dim() == 1 else X
    report = CheckReport(f"check_kernel({type(kernel).__name__})")
    add = report.items.append
    with torch.no_grad():
        K = _dense(k, X)
        finite = bool(torch.all(torch.isfinite(K)))
        add(CheckItem("finite", finite, 0.0 if finite else 1.0, 0.0, "k(X) holds NaN or inf"))
        add(
            CheckItem(
                "symmetric",
                _rel(K, K.mT) <= tol,
                _rel(K, K.mT),
                tol,
                "k(X)[i, j] != k(X)[j, i]: the forward is not symmetric in x1 and x2",
            )
        )
        eig = torch.linalg.eigvalsh(0.5 * (K + K.mT)) if finite else torch.tensor([float("nan")])
        scale = max(float(eig.abs().max()), 1e-300)
        min_rel = float(eig.min()) / scale
        add(
            CheckItem(
                "psd",
                min_rel >= -tol * 10,
                min_rel,
                tol * 10,
                f"smallest eigenvalue {float(eig.min()):.3g} (largest {scale:.3g}): the kernel is not positive "
                "semi-definite; it cannot be a covariance (check signs, and that sums/products of valid kernels are used)",
            )
        )
        diag = k(X, diag=True)
        add(
            CheckItem(
                "diag",
                _rel(diag, K.diagonal()) <= tol,
                _rel(diag, K.diagonal()),
                tol,
                "k(X, diag=True) differs from the diagonal of k(X): fix the forward's diag branch (or remove it; "
                "the base class then computes the diagonal pairwise)",
            )
        )
        KXX = _dense(k, X, X)
        add(
            CheckItem(
                "k(X) == k(X, X)",
                _rel(K, KXX) <= tol,
                _rel(K, KXX),
                tol,
                "the forward treats x2 = None / x2 is x1 differently from an equal copy",
            )
        )
        X2 = torch.randn(X.shape, generator=gen, dtype=torch.float64)
        try:
            Kb = _dense(k, torch.stack([X, X2]))
            K2 = _dense(k, X2)
            err = max(_rel(Kb[0], K), _rel(Kb[1], K2))
            detail = "a batch (2, n, d) of inputs differs from each member alone: the forward mixes batch dimensions"
        except Exception as e:  # noqa: BLE001 - any failure here is the finding
            err, detail = float("inf"), f"batched inputs (2, n, d) raised {type(e).__name__}: {e}"
        add(CheckItem("batch", err <= tol, err, tol, detail))
    params = [(name, p) for name, p in k.named_parameters() if p.requires_grad]
    if params:
        weights = torch.randn(K.shape, generator=gen, dtype=torch.float64)

        def functional():
            return (_dense(k, X) * weights).sum() + (k(X, diag=True) * weights.diagonal()).sum()

        report.items.extend(_finite_difference_items("kernel", params, functional, max(tol, 1e-5), 1e-6, 20))
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
    report.items.extend(_finite_difference_items("model", params, loss, tol, h, max_entries))
    return report
