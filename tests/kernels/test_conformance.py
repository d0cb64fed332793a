"""The kernel conformance case: every kernel, the same contract.

Runs on every kernel class of ``torchgp.kernels``, discovered automatically (see ``_factories``):
batch equals loop, diag equals the full matrix's diagonal, k(X) == k(X, X), symmetry, PSD,
gradcheck (float64) for every hyperparameter and for the inputs, finite gradients at zero
distance, dtype following the inputs.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from tests._tol import assert_close, psd_tol
from tests.kernels._factories import ABSTRACT, CASE_IDS, CASES, DISCOVERED, TABLE, KernelCase
from torchgp import kernels as K

N, M = 7, 5


@pytest.fixture(params=CASES, ids=CASE_IDS)
def case(request):
    return request.param


def _t(k, X) -> int:
    """Rows per input point: 1, or the number of tasks of a multitask kernel."""
    return k.num_outputs_per_input(X, X)


def _kernel_params(case: KernelCase, k):
    """The kernel's own trainable parameters (not a likelihood's, not frozen ones)."""
    return [(n, p) for n, p in k.named_parameters() if p.requires_grad and not n.startswith(case.foreign_params)]


# ---------------------------------------------------------------------------- discovery
def test_discovery_finds_every_exported_kernel():
    exported = {getattr(K, n) for n in K.__all__} - {getattr(K, n) for n in ABSTRACT if hasattr(K, n)}
    assert exported <= set(DISCOVERED)
    assert K.RFFKernel in DISCOVERED and K.InducingPointKernel in DISCOVERED


@pytest.mark.parametrize("name", ABSTRACT)
def test_abstract_bases_are_really_abstract(name):
    # the one list the suite skips holds only classes that have no maths to check
    with pytest.raises(NotImplementedError):
        getattr(K, name)()(torch.randn(3, 2)).to_dense()


def test_a_new_kernel_is_checked_without_being_listed():
    import tests.kernels._factories as F

    class NewKernel(K.Kernel):
        def forward(self, x1, x2):
            return x1 @ x2.mT

    NewKernel.__module__ = "torchgp.kernels.new"
    try:
        assert NewKernel in F.discover()
        default = F._default_case(NewKernel)
        assert isinstance(default.build(2, torch.Size()), NewKernel)

        class NeedsArgs(NewKernel):
            def __init__(self, base):
                super().__init__()

        NeedsArgs.__module__ = "torchgp.kernels.new"
        with pytest.raises(TypeError, match="add a KernelCase"):
            F._default_case(NeedsArgs).build(2, torch.Size())
    finally:
        NewKernel.__module__ = __name__  # out of torchgp.kernels again


def test_table_builds_what_it_says():
    for c in TABLE:
        assert isinstance(c.build(c.dims, torch.Size()), K.Kernel), c.name


# ---------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_k_of_x_equals_k_of_x_x_and_dtype_follows(case, dtype):
    k = case.make(dtype=dtype)
    X = case.x(N, dtype=dtype)
    K1 = k(X).to_dense()
    K2 = k(X, X.clone()).to_dense()
    assert K1.dtype == dtype and K1.shape == (N * _t(k, X),) * 2
    assert_close(K1, K2, loose=10)


def test_diag_equals_diagonal_of_full(case):
    k = case.make()
    X, Z = case.x(N, seed=0), case.x(N, seed=1)
    assert_close(k(X, diag=True), k(X).to_dense().diagonal(dim1=-2, dim2=-1))
    assert_close(k(X, Z, diag=True), k(X, Z).to_dense().diagonal(dim1=-2, dim2=-1))
    assert k(X, diag=True).shape == (N * _t(k, X),)


def test_symmetric_and_psd(case):
    k = case.make()
    X = case.x(12)
    Kx = k(X).to_dense()
    assert_close(Kx, Kx.mT)
    eig = torch.linalg.eigvalsh(Kx)
    assert eig.min() >= -psd_tol(Kx.dtype) * eig.max().abs().clamp_min(1.0)


def test_rectangular_shape(case):
    k = case.make()
    X = case.x(N)
    out = k(X, case.x(M, seed=3)).to_dense()
    assert out.shape == (N * _t(k, X), M * _t(k, X))
    assert torch.all(torch.isfinite(out))


def test_input_batch_equals_loop(case):
    k = case.make()
    X, Z = case.x(N, 3, seed=0), case.x(M, 3, seed=1)
    batched = k(X, Z).to_dense()
    t = _t(k, X)
    assert batched.shape == (3, N * t, M * t)
    for i in range(3):
        assert_close(batched[i], k(X[i], Z[i]).to_dense())
    assert_close(k(X, Z, diag=False).to_dense(), batched)
    diag = k(X, diag=True)
    assert diag.shape == (3, N * t)
    for i in range(3):
        assert_close(diag[i], k(X[i], diag=True))


def _copy_member(ki, kb, i):
    """Give the single kernel ``ki`` the i-th member's parameters and (batched) buffers of ``kb``."""
    with torch.no_grad():
        for (_, p), (_, pb) in zip(ki.named_parameters(), kb.named_parameters()):
            p.copy_(pb[i])
        single, batched = dict(ki.named_buffers()), dict(kb.named_buffers())
        for name, b in single.items():
            bb = batched[name]
            if bb.shape != b.shape and bb.shape[1:] == b.shape:  # e.g. RFF frequencies drawn per member
                b.copy_(bb[i])


def test_kernel_batch_equals_loop(case):
    if not case.supports_batch:
        pytest.skip("kernel without a batch_shape")
    batch = torch.Size([2])
    kb = case.make(batch_shape=batch, seed=5)
    # different hyperparameters per batch member, or the test cannot tell them apart
    assert any(p.shape[:1] == batch and not torch.allclose(p[0], p[1]) for p in kb.parameters())
    X, Z = case.x(N, 2, seed=0), case.x(M, 2, seed=1)
    full = kb(X, Z).to_dense()
    diag = kb(X, diag=True)
    shared_x = kb(X[0], Z[0]).to_dense()  # non-batched inputs broadcast against the kernel batch
    t = _t(kb, X)
    assert full.shape == (2, N * t, M * t) and diag.shape == (2, N * t) and shared_x.shape == (2, N * t, M * t)
    for i in range(2):
        ki = case.make(seed=5)
        _copy_member(ki, kb, i)
        assert_close(full[i], ki(X[i], Z[i]).to_dense())
        assert_close(diag[i], ki(X[i], diag=True))
        assert_close(shared_x[i], ki(X[0], Z[0]).to_dense())


def test_last_dim_is_batch(case):
    if not case.single_lengthscale:
        pytest.skip("per-dimension hyperparameters: last_dim_is_batch applies one kernel per dimension")
    k = case.make()
    d = case.dims
    X = case.x(N)
    out = k(X, last_dim_is_batch=True).to_dense()
    assert out.shape == (d, N, N)
    for j in range(d):
        assert_close(out[j], k(X[:, j : j + 1]).to_dense())
    assert_close(k(X, diag=True, last_dim_is_batch=True), out.diagonal(dim1=-2, dim2=-1))


def test_last_dim_is_batch_with_ard_is_refused():
    from torchgp.errors import ShapeError
    from torchgp.kernels import RBFKernel, ScaleKernel

    for k in (RBFKernel(ard_num_dims=3), ScaleKernel(RBFKernel(ard_num_dims=3))):
        with pytest.raises(ShapeError, match="last_dim_is_batch"):
            k(torch.randn(4, 3), last_dim_is_batch=True).to_dense()


def test_gradcheck_hyperparameters(case):
    k = case.make()
    own = _kernel_params(case, k)
    names = [n for n, _ in own]
    raws = tuple(p.detach().clone().requires_grad_(True) for _, p in own)
    assert raws, "every kernel here has hyperparameters"
    X, Z = case.x(5, seed=0), case.x(4, seed=1)

    def f(*params):
        kwargs = dict(zip(names, params))
        return (
            functional_call(k, kwargs, (X, Z), strict=False).to_dense(),
            functional_call(k, kwargs, (X,), strict=False).to_dense(),
            functional_call(k, kwargs, (X,), {"diag": True}, strict=False),
        )

    assert torch.autograd.gradcheck(f, raws)


def test_gradcheck_inputs(case):
    k = case.make()
    X = case.x(5, seed=0).requires_grad_(True)
    Z = case.x(4, seed=1).requires_grad_(True)
    out = k(X, Z).to_dense()
    if not out.requires_grad or all(g is None for g in torch.autograd.grad(out.sum(), (X, Z), allow_unused=True)):
        pytest.skip("the kernel does not depend differentiably on its inputs (constant, or integer indices)")
    assert torch.autograd.gradcheck(lambda a, b: k(a, b).to_dense(), (X, Z))
    assert torch.autograd.gradcheck(lambda a: k(a).to_dense(), (X,))


def test_every_hyperparameter_gets_a_gradient(case):
    k = case.make()
    X = case.x(6)
    k(X).to_dense().sum().backward()
    for name, p in _kernel_params(case, k):
        assert p.grad is not None and torch.all(torch.isfinite(p.grad)), name
        assert p.grad.abs().sum() > 0, f"{name} does not influence the kernel"


def test_finite_gradient_at_zero_distance(case):
    k = case.make()
    X = case.x(4)
    X = torch.cat([X, X[:2]])  # duplicated points: zero distance off the diagonal too
    X.requires_grad_(True)
    out = k(X).to_dense()
    if not out.requires_grad:
        pytest.skip("the kernel does not depend differentiably on its inputs or hyperparameters here")
    out.sum().backward()
    assert X.grad is None or torch.all(torch.isfinite(X.grad))
    for name, p in _kernel_params(case, k):
        assert torch.all(torch.isfinite(p.grad)), name
    Y = X.detach().clone().requires_grad_(True)
    out = k(Y, Y.clone()).to_dense()  # x1 is not x2, distances exactly zero
    if out.requires_grad:
        out.sum().backward()
        assert Y.grad is None or torch.all(torch.isfinite(Y.grad))


def test_non_lazy_mode_gives_the_same_matrix(case):
    import torchgp

    k = case.make()
    X = case.x(N)
    with torchgp.settings.lazily_evaluate_kernels(False):
        dense = k(X)
    assert isinstance(dense, torch.Tensor)
    assert_close(dense, k(X).to_dense())


def test_feature_mismatch_raises(case):
    k = case.make()
    from torchgp.errors import ShapeError

    with pytest.raises(ShapeError, match="features"):
        k(case.x(N), case.x(M, d=case.dims + 1))
