"""Products of exponential-profile kernels in one fused node equal plain autograd through the factors (1e-10)."""

from __future__ import annotations

import pytest
import torch

from tests._tol import tol
from tests.kernels.test_fused import _graph_names
from torchgp import kernels, settings


class Exp1(kernels.StationaryKernel):
    """A user's ``exp(−r²)``: rate −1, against the built-ins' −½ (the fused product rescales its features)."""

    dK_dr2_uses_r2 = False
    dK_dr2_factor = -1.0

    def K_r2(self, r2):
        return torch.exp(-r2)

    def dK_dr2(self, r2, K):
        return -K


class Doubled(kernels.RBFKernel):
    """An overridden forward: must stay out of the fused product."""

    def forward(self, x1, x2, **params):
        return 2 * super().forward(x1, x2)


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) - 0.5)
    return module.double()


def _both_ways(kernel, x1, x2=None, diag=False, seed=1):
    """``(K, grads)`` of ``Σ G ∘ K`` to every parameter and the inputs, fused and unfused."""
    inputs = [x for x in (x1, x2) if x is not None and x.requires_grad]
    params = list(kernel.parameters())
    out = []
    for fused in (False, True):
        with settings.fused_kernels(fused):
            K = kernel(x1, x2, diag=diag) if diag else kernel(x1, x2).to_dense()
        G = torch.randn(K.shape, generator=torch.Generator().manual_seed(seed), dtype=K.dtype)
        if not K.requires_grad:  # a unit diagonal: constant
            out.append((K, []))
            continue
        grads = torch.autograd.grad((K * G).sum(), params + inputs, allow_unused=True)
        out.append((K, [torch.zeros_like(t) if g is None else g for g, t in zip(grads, params + inputs)]))
    (K0, g0), (K1, g1) = out
    torch.testing.assert_close(K1, K0, rtol=1e-10, atol=1e-12)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    return K1


PRODUCTS = {
    "rbf_periodic": lambda: kernels.RBFKernel(ard_num_dims=3) * kernels.PeriodicKernel(ard_num_dims=3),
    "rbf_rbf_active_dims": lambda: (
        kernels.RBFKernel(active_dims=[0]) * kernels.RBFKernel(ard_num_dims=2, active_dims=[1, 2])
    ),
    "rbf_periodic_rate1": lambda: kernels.RBFKernel() * kernels.PeriodicKernel() * Exp1(ard_num_dims=3),
    "rbf_matern_periodic": lambda: (
        kernels.RBFKernel(active_dims=[0, 1]) * kernels.MaternKernel(nu=1.5) * kernels.PeriodicKernel()
    ),
    "rbf_linear": lambda: kernels.RBFKernel() * kernels.LinearKernel(),
    "batched": lambda: (
        kernels.RBFKernel(ard_num_dims=3, batch_shape=torch.Size([2])) * kernels.PeriodicKernel(active_dims=[2])
    ),
    "doubled": lambda: kernels.RBFKernel() * Doubled() * kernels.PeriodicKernel(),
}


def _inputs(n, m, d, seed, batch=(), offset=0.0):
    g = torch.Generator().manual_seed(seed)
    x1 = (torch.randn(*batch, n, d, generator=g, dtype=torch.float64) + offset).requires_grad_()
    x2 = (torch.randn(m, d, generator=g, dtype=torch.float64) + offset).requires_grad_()
    return x1, x2


@pytest.mark.parametrize("name", sorted(PRODUCTS))
@pytest.mark.parametrize("scaled", [False, True])
def test_product_equals_autograd(name, scaled):
    kernel = PRODUCTS[name]()
    if scaled:
        kernel = kernels.ScaleKernel(kernel)
    kernel = _randomise(kernel)
    x1, x2 = _inputs(9, 5, 3, seed=2)
    _both_ways(kernel, x1)
    _both_ways(kernel, x1, x2)
    _both_ways(kernel, x1, x1.detach().clone(), diag=True)
    _both_ways(kernel, x1, diag=True)
    xb, _ = _inputs(7, 1, 3, seed=3, batch=(2,))
    _both_ways(kernel, xb)


@pytest.mark.parametrize("name", ["rbf_periodic", "rbf_rbf_active_dims", "batched"])
def test_product_equals_autograd_gram_form(name):
    """Past the direct-difference limit (r² by one GEMM of centred, concatenated features)."""
    kernel = _randomise(kernels.ScaleKernel(PRODUCTS[name]()), seed=4)
    x1, x2 = _inputs(80, 70, 3, seed=5, offset=10.0)
    _both_ways(kernel, x1)
    _both_ways(kernel, x1, x2)


def test_scaled_exponential_product_is_one_node():
    """``s · RBF × periodic``: one fused node, whose output is the matrix itself (no product or scale pass)."""
    k = _randomise(kernels.ScaleKernel(kernels.RBFKernel() * kernels.PeriodicKernel()))
    x = torch.rand(12, 1, dtype=torch.float64)
    K = k(x).to_dense()
    assert type(K.grad_fn).__name__ == "StationaryCovarianceBackward"
    assert _graph_names(K).count("StationaryCovarianceBackward") == 1
    # a factor outside the exponential profile keeps its own node and the element-wise product
    mixed = _randomise(kernels.ScaleKernel(kernels.RBFKernel() * kernels.PeriodicKernel() * kernels.RQKernel()))
    names = _graph_names(mixed(x).to_dense())
    assert names.count("StationaryCovarianceBackward") == 2 and names[0] == "MulBackward0"
    with settings.fused_kernels(False):
        assert "StationaryCovarianceBackward" not in _graph_names(k(x).to_dense())


def test_product_last_dim_is_batch_keeps_the_elementwise_product():
    kernel = _randomise(kernels.ScaleKernel(kernels.RBFKernel() * kernels.PeriodicKernel()))
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    K = kernel(x, last_dim_is_batch=True).to_dense()
    ref = torch.stack(
        [kernel(x[:, j : j + 1]).to_dense() for j in range(3)],
    )
    torch.testing.assert_close(K, ref, rtol=1e-12, atol=1e-12)


def test_fused_product_gradcheck():
    """``torch.autograd.gradcheck`` through ``s · RBF(ARD) × periodic × exp(−r²)``: hyperparameters and inputs."""
    kernel = _randomise(
        kernels.ScaleKernel(kernels.RBFKernel(ard_num_dims=2) * kernels.PeriodicKernel(active_dims=[1]) * Exp1())
    )
    names = [n for n, _ in kernel.named_parameters()]
    g = torch.Generator().manual_seed(9)
    x1 = torch.randn(5, 2, generator=g, dtype=torch.float64).requires_grad_()
    x2 = torch.randn(4, 2, generator=g, dtype=torch.float64).requires_grad_()
    leaves = [p.detach().clone().requires_grad_() for p in kernel.parameters()]

    def matrix(a, b, *raw):
        out = torch.func.functional_call(kernel, dict(zip(names, raw)), (a, b))
        return out.to_dense()

    assert torch.autograd.gradcheck(matrix, (x1, x2, *leaves))
    assert torch.autograd.gradcheck(lambda a, *raw: matrix(a, a, *raw), (x1, *leaves))


@pytest.mark.parametrize("s_batch", [(), (2,)])
@pytest.mark.parametrize("x_batch", [(), (2,)])
def test_exponential_node_folds_rate_and_scale_into_its_gemm(s_batch, x_batch, monkeypatch):
    """At Gram sizes ``s · exp(c r²)`` comes from one GEMM (rate and ``log s`` in it): autograd's numbers, batched."""
    from torchgp.kernels import _fused

    calls = []
    original = _fused.exp_sq_dist
    monkeypatch.setattr(_fused, "exp_sq_dist", lambda *args: calls.append(1) or original(*args))
    base = kernels.RBFKernel(ard_num_dims=3, batch_shape=torch.Size(s_batch)) * Exp1(active_dims=[0])
    kernel = _randomise(kernels.ScaleKernel(base), seed=11)
    x1, x2 = _inputs(100, 90, 3, seed=12, batch=x_batch, offset=3.0)
    K = _both_ways(kernel, x1)
    _both_ways(kernel, x1, x2)
    assert len(calls) == 2
    s = kernel.outputscale.detach()
    torch.testing.assert_close(K.detach().diagonal(dim1=-2, dim2=-1), s[..., None].expand(K.shape[:-1]))
    assert bool((K <= s[..., None, None] * (1 + 1e-14)).all())


def test_sum_of_three_terms_equals_the_sum_of_its_parts():
    """The sum adds its third and later terms in place: values and gradients of ``Σ G ∘ K`` against the parts'."""
    parts = [
        kernels.ScaleKernel(kernels.RBFKernel()),
        kernels.ScaleKernel(kernels.RBFKernel() * kernels.PeriodicKernel()),
        kernels.ScaleKernel(kernels.RQKernel()),
        kernels.MaternKernel(nu=0.5, batch_shape=torch.Size([2])),  # wider batch: added out of place
    ]
    total = _randomise(kernels.AdditiveKernel(*parts), seed=13)
    x = torch.randn(30, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(14)).requires_grad_()
    G = torch.randn(2, 30, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(15))
    params = list(total.parameters()) + [x]
    K = total(x).to_dense()
    g1 = torch.autograd.grad((K * G).sum(), params)
    ref = sum(p(x).to_dense() for p in parts)
    g0 = torch.autograd.grad((ref * G).sum(), params)
    torch.testing.assert_close(K, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(total(x, diag=True), sum(p(x, diag=True) for p in parts), rtol=1e-12, atol=1e-12)


def test_exponential_node_float32_matches_float64():
    """The folded GEMM in float32 (inputs offset from the origin): float64's matrix and gradients to float32 tolerance."""
    kernel = _randomise(kernels.ScaleKernel(kernels.RBFKernel(ard_num_dims=2) * kernels.PeriodicKernel()), seed=16)
    x = torch.rand(120, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(17)) * 4 + 50.0
    out = {}
    for dtype in (torch.float64, torch.float32):
        k = kernel.to(dtype)
        xd = x.to(dtype).requires_grad_()
        K = k(xd).to_dense()
        grads = torch.autograd.grad(K.sum(), [xd, *k.parameters()])
        out[dtype] = (K.detach(), grads)
    K32, g32 = out[torch.float32]
    K64, g64 = out[torch.float64]
    torch.testing.assert_close(K32.double(), K64, **tol(torch.float32))
    for a, b in zip(g32, g64):  # sums of 120 terms that cancel: judged against each gradient's largest entry
        scale = tol(torch.float32, loose=10.0)["rtol"] * float(b.abs().max())
        torch.testing.assert_close(a.double(), b, rtol=0.0, atol=scale)
