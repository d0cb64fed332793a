"""The kernel conformance case: every kernel, the same contract.

batch equals loop, diag equals the full matrix's diagonal, k(X) == k(X, X), symmetry, PSD,
gradcheck (float64) for every hyperparameter and for the inputs, finite gradients at zero
distance, dtype following the inputs.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from tests._tol import assert_close, psd_tol
from tests.kernels._factories import CASE_IDS, CASES

N, M = 7, 5


def _dims(case) -> int:
    return 1 if case.only_1d else 3


def _x(n, d, *batch, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*batch, n, d, generator=g, dtype=dtype)


@pytest.fixture(params=CASES, ids=CASE_IDS)
def case(request):
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_k_of_x_equals_k_of_x_x_and_dtype_follows(case, dtype):
    d = _dims(case)
    k = case.make(d, dtype=dtype)
    X = _x(N, d, dtype=dtype)
    K1 = k(X).to_dense()
    K2 = k(X, X.clone()).to_dense()
    assert K1.dtype == dtype and K1.shape == (N, N)
    assert_close(K1, K2, loose=10)


def test_diag_equals_diagonal_of_full(case):
    d = _dims(case)
    k = case.make(d)
    X, Z = _x(N, d, seed=0), _x(N, d, seed=1)
    assert_close(k(X, diag=True), k(X).to_dense().diagonal(dim1=-2, dim2=-1))
    assert_close(k(X, Z, diag=True), k(X, Z).to_dense().diagonal(dim1=-2, dim2=-1))
    assert k(X, diag=True).shape == (N,)


def test_symmetric_and_psd(case):
    d = _dims(case)
    k = case.make(d)
    X = _x(12, d)
    K = k(X).to_dense()
    assert_close(K, K.mT)
    eig = torch.linalg.eigvalsh(K)
    assert eig.min() >= -psd_tol(K.dtype) * eig.max().abs().clamp_min(1.0)


def test_rectangular_shape(case):
    d = _dims(case)
    k = case.make(d)
    out = k(_x(N, d), _x(M, d, seed=3)).to_dense()
    assert out.shape == (N, M)
    assert torch.all(torch.isfinite(out))


def test_input_batch_equals_loop(case):
    d = _dims(case)
    k = case.make(d)
    X, Z = _x(N, d, 3, seed=0), _x(M, d, 3, seed=1)
    batched = k(X, Z).to_dense()
    assert batched.shape == (3, N, M)
    for i in range(3):
        assert_close(batched[i], k(X[i], Z[i]).to_dense())
    assert_close(k(X, Z, diag=False).to_dense(), batched)
    diag = k(X, diag=True)
    assert diag.shape == (3, N)
    for i in range(3):
        assert_close(diag[i], k(X[i], diag=True))


def test_kernel_batch_equals_loop(case):
    if not case.supports_batch:
        pytest.skip("user kernel with scalar parameters has no batch_shape")
    d = _dims(case)
    batch = torch.Size([2])
    kb = case.make(d, batch, seed=5)
    # different hyperparameters per batch member, or the test cannot tell them apart
    assert any(p.shape[:1] == batch and not torch.allclose(p[0], p[1]) for p in kb.parameters())
    X, Z = _x(N, d, 2, seed=0), _x(M, d, 2, seed=1)
    full = kb(X, Z).to_dense()
    diag = kb(X, diag=True)
    shared_x = kb(X[0], Z[0]).to_dense()  # non-batched inputs broadcast against the kernel batch
    assert full.shape == (2, N, M) and diag.shape == (2, N) and shared_x.shape == (2, N, M)
    for i in range(2):
        ki = case.make(d, seed=5)
        with torch.no_grad():
            for (_, p), (_, pb) in zip(ki.named_parameters(), kb.named_parameters()):
                p.copy_(pb[i])
        assert_close(full[i], ki(X[i], Z[i]).to_dense())
        assert_close(diag[i], ki(X[i], diag=True))
        assert_close(shared_x[i], ki(X[0], Z[0]).to_dense())


def test_last_dim_is_batch(case):
    if not case.single_lengthscale:
        pytest.skip("per-dimension hyperparameters: last_dim_is_batch applies one kernel per dimension")
    d = _dims(case)
    k = case.make(d)
    X = _x(N, d)
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
    d = _dims(case)
    k = case.make(d)
    names = [n for n, _ in k.named_parameters()]
    raws = tuple(p.detach().clone().requires_grad_(True) for _, p in k.named_parameters())
    assert raws, "every kernel here has hyperparameters"
    X, Z = _x(5, d, seed=0), _x(4, d, seed=1)

    def f(*params):
        kwargs = dict(zip(names, params))
        return (
            functional_call(k, kwargs, (X, Z)).to_dense(),
            functional_call(k, kwargs, (X,)).to_dense(),
            functional_call(k, kwargs, (X,), {"diag": True}),
        )

    assert torch.autograd.gradcheck(f, raws)


def test_gradcheck_inputs(case):
    d = _dims(case)
    k = case.make(d)
    X = _x(5, d, seed=0).requires_grad_(True)
    Z = _x(4, d, seed=1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: k(a, b).to_dense(), (X, Z))
    assert torch.autograd.gradcheck(lambda a: k(a).to_dense(), (X,))


def test_every_hyperparameter_gets_a_gradient(case):
    d = _dims(case)
    k = case.make(d)
    X = _x(6, d)
    k(X).to_dense().sum().backward()
    for name, p in k.named_parameters():
        assert p.grad is not None and torch.all(torch.isfinite(p.grad)), name
        assert p.grad.abs().sum() > 0, f"{name} does not influence the kernel"


def test_finite_gradient_at_zero_distance(case):
    d = _dims(case)
    k = case.make(d)
    X = _x(4, d)
    X = torch.cat([X, X[:2]])  # duplicated points: zero distance off the diagonal too
    X.requires_grad_(True)
    k(X).to_dense().sum().backward()
    assert torch.all(torch.isfinite(X.grad))
    for name, p in k.named_parameters():
        assert torch.all(torch.isfinite(p.grad)), name
    Y = X.detach().clone().requires_grad_(True)
    k(Y, Y.clone()).to_dense().sum().backward()  # x1 is not x2, distances exactly zero
    assert torch.all(torch.isfinite(Y.grad))


def test_non_lazy_mode_gives_the_same_matrix(case):
    import torchgp

    d = _dims(case)
    k = case.make(d)
    X = _x(N, d)
    with torchgp.settings.lazily_evaluate_kernels(False):
        dense = k(X)
    assert isinstance(dense, torch.Tensor)
    assert_close(dense, k(X).to_dense())


def test_feature_mismatch_raises(case):
    d = _dims(case)
    k = case.make(d)
    from torchgp.errors import ShapeError

    with pytest.raises(ShapeError, match="features"):
        k(_x(N, d), _x(M, d + 1))
