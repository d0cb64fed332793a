r"""The contract every kernel keeps, as checks that return :class:`~torchgp.testing.CheckItem`\ s.

Each check takes a :class:`~torchgp.testing.KernelCase` (how to build the kernel, and its inputs) and
evaluates it on a few points (``n`` = 4 to 12): batch equals loop (over the inputs and over the kernel's own
batch), ``diag=True`` equals the diagonal of the full matrix, ``k(X) == k(X, X)`` in float32 and float64
(the result follows the inputs' dtype), symmetry, positive semi-definiteness, ``gradcheck`` (float64)
in every hyperparameter and in the inputs, finite gradients at zero distance, ``active_dims``,
``last_dim_is_batch`` where the kernel has one set of parameters for every dimension, the non-lazy mode,
and a clear error for inputs with the wrong number of features.

Comparisons use ``|a - b| <= atol + rtol |b|`` with :func:`tolerance` of the dtype.

Example:
    >>> from torchgp.kernels import MaternKernel
    >>> report = check_kernel_conformance(lambda d, b: MaternKernel(nu=1.5, batch_shape=b))
    >>> report.ok
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch.func import functional_call

from torchgp import settings
from torchgp.errors import ShapeError
from torchgp.testing.cases import KernelCase
from torchgp.testing.numerics import close_item, psd_item
from torchgp.testing.report import CheckItem, CheckReport

__all__ = ["CHECKS", "run_check", "check_kernel_conformance", "as_case", "input_dim"]

N, M = 7, 5  # rows of x1 and x2

_PSD_TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def _dense(out) -> torch.Tensor:
    return out.to_dense() if hasattr(out, "to_dense") else out


def _rows(k, X) -> int:
    """Rows per input point: 1, or the number of tasks of a multitask kernel."""
    return k.num_outputs_per_input(X, X)


def _skip(name: str, why: str) -> list[CheckItem]:
    return [CheckItem(name, True, 0.0, 0.0, why, skipped=True)]


# ---------------------------------------------------------------------------- the checks
def check_same_as_pairwise(case: KernelCase) -> list[CheckItem]:
    """``k(X) == k(X, X.clone())`` in float32 and float64, the result in the inputs' dtype and ``(N t, N t)``."""
    items = []
    for dtype in (torch.float32, torch.float64):
        k, X = case.make(dtype=dtype), case.x(N, dtype=dtype)
        K1, K2 = _dense(k(X)), _dense(k(X, X.clone()))
        name = f"k(X) == k(X, X) {str(dtype).removeprefix('torch.')}"
        shape = (N * _rows(k, X),) * 2
        if K1.dtype != dtype or tuple(K1.shape) != shape:
            items.append(CheckItem(name, False, 1.0, 0.0, f"k(X) is {K1.dtype} {tuple(K1.shape)}, not {dtype} {shape}"))
            continue
        items.append(close_item(name, K1, K2, "the forward treats x2 = None / x2 is x1 apart from an equal copy", 10))
    return items


def check_diag(case: KernelCase) -> list[CheckItem]:
    """``k(X, diag=True)`` and ``k(X, Z, diag=True)`` equal the diagonals of the full matrices."""
    k = case.make()
    X, Z = case.x(N, seed=0), case.x(N, seed=1)
    fix = "fix the forward's diag branch (or remove it: the base class then evaluates aligned pairs)"
    return [
        close_item("diag", k(X, diag=True), _dense(k(X)).diagonal(dim1=-2, dim2=-1), f"k(X, diag=True): {fix}"),
        close_item(
            "diag x1 != x2",
            k(X, Z, diag=True),
            _dense(k(X, Z)).diagonal(dim1=-2, dim2=-1),
            f"k(X, Z, diag=True): {fix}",
        ),
    ]


def check_symmetric_psd(case: KernelCase) -> list[CheckItem]:
    """``k(X)`` on 12 points is symmetric and positive semi-definite."""
    K = _dense(case.make()(case.x(12)))
    detail = "k(X)[i, j] != k(X)[j, i]: the forward is not symmetric in x1 and x2"
    return [close_item("symmetric", K, K.mT, detail), psd_item(K, _PSD_TOL[K.dtype])]


def check_rectangular(case: KernelCase) -> list[CheckItem]:
    """``k(X, Z)`` has shape ``(N t, M t)`` and finite entries."""
    k, X = case.make(), case.x(N)
    out = _dense(k(X, case.x(M, seed=3)))
    t = _rows(k, X)
    ok = tuple(out.shape) == (N * t, M * t) and bool(torch.all(torch.isfinite(out)))
    return [
        CheckItem(
            "rectangular", ok, 0.0 if ok else 1.0, 0.0, f"k(X, Z) is {tuple(out.shape)}, not finite ({N * t}, {M * t})"
        )
    ]


def check_input_batch(case: KernelCase) -> list[CheckItem]:
    """A batch of 3 input sets gives each member's own matrix and diagonal."""
    k = case.make()
    X, Z = case.x(N, 3, seed=0), case.x(M, 3, seed=1)
    full, diag = _dense(k(X, Z)), k(X, diag=True)
    loop = torch.stack([_dense(k(X[i], Z[i])) for i in range(3)])
    loop_diag = torch.stack([k(X[i], diag=True) for i in range(3)])
    detail = "a batch (3, n, d) of inputs differs from each member alone: the forward mixes batch dimensions"
    return [close_item("batch = loop", full, loop, detail), close_item("batch = loop (diag)", diag, loop_diag, detail)]


def _copy_member(ki, kb, i: int) -> None:
    """Give the single kernel ``ki`` the i-th member's parameters and (batched) buffers of ``kb``."""
    with torch.no_grad():
        for (_, p), (_, pb) in zip(ki.named_parameters(), kb.named_parameters()):
            p.copy_(pb[i])
        single, batched = dict(ki.named_buffers()), dict(kb.named_buffers())
        for name, b in single.items():
            bb = batched[name]
            if bb is not None and b is not None and bb.shape != b.shape and bb.shape[1:] == b.shape:
                b.copy_(bb[i])  # e.g. random features drawn per member


def check_kernel_batch(case: KernelCase) -> list[CheckItem]:
    """A kernel with ``batch_shape=(2,)`` equals two single kernels holding each member's parameters."""
    if not case.supports_batch:
        return _skip("kernel batch = loop", "the kernel has no batch_shape")
    batch = torch.Size([2])
    kb = case.make(batch_shape=batch, seed=5)
    if not any(p.shape[:1] == batch and not torch.allclose(p[0], p[1]) for p in kb.parameters()):
        return [CheckItem("kernel batch = loop", False, 1.0, 0.0, "batch_shape=(2,) gave no batched hyperparameter")]
    X, Z = case.x(N, 2, seed=0), case.x(M, 2, seed=1)
    full, diag, shared = _dense(kb(X, Z)), kb(X, diag=True), _dense(kb(X[0], Z[0]))
    singles = []
    for i in range(2):
        ki = case.make(seed=5)
        _copy_member(ki, kb, i)
        singles.append(ki)
    detail = "member i of a batched kernel differs from a single kernel with member i's parameters"
    return [
        close_item(
            "kernel batch = loop", full, torch.stack([_dense(singles[i](X[i], Z[i])) for i in range(2)]), detail
        ),
        close_item(
            "kernel batch = loop (diag)", diag, torch.stack([singles[i](X[i], diag=True) for i in range(2)]), detail
        ),
        close_item(
            "kernel batch, shared inputs",
            shared,
            torch.stack([_dense(singles[i](X[0], Z[0])) for i in range(2)]),
            "non-batched inputs do not broadcast against the kernel's batch_shape",
        ),
    ]


def check_last_dim_is_batch(case: KernelCase) -> list[CheckItem]:
    """``last_dim_is_batch=True`` gives one matrix per input dimension, each the kernel on that column."""
    if not case.single_lengthscale:
        return _skip("last_dim_is_batch", "per-dimension hyperparameters: last_dim_is_batch does not apply")
    k, X = case.make(), case.x(N)
    out = _dense(k(X, last_dim_is_batch=True))
    loop = torch.stack([_dense(k(X[:, j : j + 1])) for j in range(X.shape[-1])])
    detail = "k(X, last_dim_is_batch=True)[j] differs from k(X[:, j:j+1])"
    diag = k(X, diag=True, last_dim_is_batch=True)
    return [
        close_item("last_dim_is_batch", out, loop, detail),
        close_item("last_dim_is_batch (diag)", diag, out.diagonal(dim1=-2, dim2=-1), "its diag differs"),
    ]


def check_active_dims(case: KernelCase) -> list[CheckItem]:
    """With ``active_dims`` set to the last ``d`` of ``d + 1`` columns, the kernel equals itself on those columns."""
    k = case.make()
    X, Z = case.x(N, seed=0), case.x(M, seed=1)
    wide = [torch.cat([torch.full_like(x[..., :1], 7.0), x], -1) for x in (X, Z)]
    expected, expected_diag = _dense(k(X, Z)), k(X, diag=True)
    own = k.active_dims
    k.active_dims = torch.arange(1, X.shape[-1] + 1) if own is None else own + 1
    detail = "active_dims does not select the input columns (a forward that reads x1/x2 before the base class?)"
    return [
        close_item("active_dims", _dense(k(*wide)), expected, detail),
        close_item("active_dims (diag)", k(wide[0], diag=True), expected_diag, detail),
    ]


def check_gradcheck_hyperparameters(case: KernelCase) -> list[CheckItem]:
    """``torch.autograd.gradcheck`` (float64) of ``k(X, Z)``, ``k(X)`` and ``k(X, diag=True)`` in the raw hyperparameters."""
    k = case.make()
    own = case.own_parameters(k)
    if not own:
        return [CheckItem("gradcheck hyperparameters", False, 1.0, 0.0, "no trainable hyperparameters were found")]
    names = [n for n, _ in own]
    raws = tuple(p.detach().clone().requires_grad_(True) for _, p in own)
    X, Z = case.x(5, seed=0), case.x(4, seed=1)

    def f(*params):
        kwargs = dict(zip(names, params))
        return (
            _dense(functional_call(k, kwargs, (X, Z), strict=False)),
            _dense(functional_call(k, kwargs, (X,), strict=False)),
            functional_call(k, kwargs, (X,), {"diag": True}, strict=False),
        )

    ok = torch.autograd.gradcheck(f, raws, raise_exception=False)
    detail = "autograd disagrees with finite differences: a non-differentiable step or a wrong custom backward"
    return [CheckItem("gradcheck hyperparameters", ok, 0.0 if ok else 1.0, 0.0, detail)]


def check_gradcheck_inputs(case: KernelCase) -> list[CheckItem]:
    """``torch.autograd.gradcheck`` (float64) of ``k(X, Z)`` and ``k(X)`` in the inputs."""
    k = case.make()
    X = case.x(5, seed=0).requires_grad_(True)
    Z = case.x(4, seed=1).requires_grad_(True)
    out = _dense(k(X, Z))
    if not out.requires_grad or all(g is None for g in torch.autograd.grad(out.sum(), (X, Z), allow_unused=True)):
        return _skip("gradcheck inputs", "the kernel does not depend differentiably on its inputs")
    ok = torch.autograd.gradcheck(lambda a, b: _dense(k(a, b)), (X, Z), raise_exception=False)
    ok = ok and torch.autograd.gradcheck(lambda a: _dense(k(a)), (X,), raise_exception=False)
    return [
        CheckItem(
            "gradcheck inputs", ok, 0.0 if ok else 1.0, 0.0, "autograd in x1/x2 disagrees with finite differences"
        )
    ]


def check_every_hyperparameter_matters(case: KernelCase) -> list[CheckItem]:
    """Every trainable hyperparameter gets a finite, nonzero gradient from ``k(X).sum()``."""
    k = case.make()
    _dense(k(case.x(6))).sum().backward()
    bad = [n for n, p in case.own_parameters(k) if p.grad is None or not torch.all(torch.isfinite(p.grad))]
    unused = [n for n, p in case.own_parameters(k) if n not in bad and p.grad.abs().sum() == 0]
    detail = f"no finite gradient: {bad}; no influence on the kernel: {unused}"
    return [
        CheckItem("every hyperparameter matters", not bad and not unused, float(len(bad) + len(unused)), 0.0, detail)
    ]


def check_zero_distance(case: KernelCase) -> list[CheckItem]:
    """Finite gradients with duplicated inputs, for ``k(X)`` and for ``k(Y, Y.clone())`` (distances exactly 0)."""
    k = case.make()
    X = case.x(4)
    X = torch.cat([X, X[:2]]).requires_grad_(True)  # zero distance off the diagonal too
    out = _dense(k(X))
    if not out.requires_grad:
        return _skip("zero distance", "the kernel does not depend differentiably on its inputs or hyperparameters")
    out.sum().backward()
    grads = [X.grad] + [p.grad for _, p in case.own_parameters(k)]
    Y = X.detach().clone().requires_grad_(True)
    out = _dense(k(Y, Y.clone()))
    if out.requires_grad:
        out.sum().backward()
        grads.append(Y.grad)
    ok = all(g is None or bool(torch.all(torch.isfinite(g))) for g in grads)
    detail = "a NaN/inf gradient at zero distance: use torchgp.kernels.distance (its gradient at 0 is finite)"
    return [CheckItem("zero distance", ok, 0.0 if ok else 1.0, 0.0, detail)]


def check_non_lazy(case: KernelCase) -> list[CheckItem]:
    """``settings.lazily_evaluate_kernels(False)`` gives a tensor equal to the lazy matrix."""
    k, X = case.make(), case.x(N)
    with settings.lazily_evaluate_kernels(False):
        dense = k(X)
    if not isinstance(dense, torch.Tensor):
        return [CheckItem("non-lazy", False, 1.0, 0.0, f"non-lazy k(X) is a {type(dense).__name__}, not a tensor")]
    return [close_item("non-lazy", dense, _dense(k(X)), "the non-lazy matrix differs from the lazy one")]


def check_feature_mismatch(case: KernelCase) -> list[CheckItem]:
    """x1 and x2 with different numbers of features raise :class:`~torchgp.errors.ShapeError` naming them."""
    k = case.make()
    try:
        _dense(k(case.x(N), case.x(M, d=case.dims + 1)))
    except ShapeError as err:
        ok = "features" in str(err)
        return [
            CheckItem("feature mismatch", ok, 0.0 if ok else 1.0, 0.0, f"the ShapeError does not say 'features': {err}")
        ]
    return [CheckItem("feature mismatch", False, 1.0, 0.0, "x1 (n, d) and x2 (m, d + 1) raised no ShapeError")]


CHECKS: dict[str, Callable[[KernelCase], list[CheckItem]]] = {
    "same_as_pairwise": check_same_as_pairwise,
    "diag": check_diag,
    "symmetric_psd": check_symmetric_psd,
    "rectangular": check_rectangular,
    "input_batch": check_input_batch,
    "kernel_batch": check_kernel_batch,
    "last_dim_is_batch": check_last_dim_is_batch,
    "active_dims": check_active_dims,
    "gradcheck_hyperparameters": check_gradcheck_hyperparameters,
    "gradcheck_inputs": check_gradcheck_inputs,
    "every_hyperparameter_matters": check_every_hyperparameter_matters,
    "zero_distance": check_zero_distance,
    "non_lazy": check_non_lazy,
    "feature_mismatch": check_feature_mismatch,
}


# ---------------------------------------------------------------------------- running them
def input_dim(kernel) -> int:
    """The input dimension a kernel instance expects: its largest ``ard_num_dims`` or ``active_dims`` index + 1."""
    dims = [1]
    for m in kernel.modules():
        if getattr(m, "ard_num_dims", None):
            dims.append(int(m.ard_num_dims))
        if getattr(m, "active_dims", None) is not None and m.active_dims.numel():
            dims.append(int(m.active_dims.max()) + 1)
    return max(dims)


def as_case(kernel_or_factory, name: str | None = None, **case_options) -> KernelCase:
    """A :class:`KernelCase` from a case, a kernel class, a factory ``(d, batch_shape) -> kernel`` or an instance.

    An instance is copied for every check (and has no batch variant); a class is built as ``cls(batch_shape=b)``.
    ``case_options`` are :class:`KernelCase` fields (``d``, ``inputs``, ``supports_batch``, ...).
    """
    from torchgp.kernels import Kernel  # the kernels layer is not needed by check.py's import

    if isinstance(kernel_or_factory, KernelCase):
        return kernel_or_factory
    if isinstance(kernel_or_factory, type):
        cls = kernel_or_factory
        return KernelCase(name or cls.__name__, lambda d, b: cls(batch_shape=b), **case_options)
    if isinstance(kernel_or_factory, Kernel):
        instance = kernel_or_factory
        case_options = {"supports_batch": False, "d": input_dim(instance), **case_options}
        return KernelCase(name or type(instance).__name__, lambda d, b: copy.deepcopy(instance), **case_options)
    if callable(kernel_or_factory):
        return KernelCase(name or getattr(kernel_or_factory, "__name__", "factory"), kernel_or_factory, **case_options)
    raise TypeError(
        f"Expected a kernel, a kernel class, a factory (d, batch_shape) -> kernel or a KernelCase; got {kernel_or_factory!r}."
    )


def run_check(check: str, case: KernelCase, raise_errors: bool = False) -> list[CheckItem]:
    """The items of one check of :data:`CHECKS` on ``case``; an exception is a failed item unless ``raise_errors``."""
    try:
        return CHECKS[check](case)
    except Exception as err:  # noqa: BLE001 - any failure of the kernel is the finding
        if raise_errors:
            raise
        return [CheckItem(check, False, float("inf"), 0.0, f"raised {type(err).__name__}: {err}")]


def check_kernel_conformance(kernel_or_factory, checks=None, name: str | None = None, **case_options) -> CheckReport:
    r"""Run the kernel conformance checks (:data:`CHECKS`) on a kernel.

    Args:
        kernel_or_factory: a :class:`~torchgp.testing.KernelCase`, a kernel class (built as
            ``cls(batch_shape=b)``), a factory ``build(d, batch_shape) -> Kernel``, or a kernel instance
            (copied; the batch check is skipped). Hyperparameters are set to seeded random values.
        checks: names of :data:`CHECKS` to run (default all).
        name: the subject's name in the report.
        case_options: :class:`~torchgp.testing.KernelCase` fields, e.g. ``d=2`` input dimensions,
            ``inputs=...`` a generator of ``(*batch, n, d)`` inputs, ``single_lengthscale=False``.

    Returns:
        A :class:`~torchgp.testing.CheckReport`; ``report.raise_if_failed()`` raises with every failure.

    Shapes:
        The kernel is evaluated on inputs ``(*batch, n, d)`` with ``n`` ≤ 12, ``batch`` ≤ 3.

    Example:
        >>> import torch
        >>> from torchgp.kernels import Kernel
        >>> class Mine(Kernel):
        ...     def forward(self, x1, x2):
        ...         return torch.exp(-torch.cdist(x1, x2))
        >>> check_kernel_conformance(Mine(), checks=["diag", "symmetric_psd"]).ok
        True
    """
    case = as_case(kernel_or_factory, name, **case_options)
    unknown = sorted(set(checks or ()) - set(CHECKS))
    if unknown:
        raise ValueError(f"Unknown checks {unknown}; the checks are {sorted(CHECKS)}.")
    report = CheckReport(f"check_kernel_conformance({case.name})")
    for check in checks or CHECKS:
        report.items.extend(run_check(check, case))
    return report
