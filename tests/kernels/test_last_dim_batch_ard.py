"""``last_dim_is_batch=True`` with per-dimension (ARD) hyperparameters: dimension j alone, with its own ``ℓ_j``.

Against GPyTorch's numbers (float64, 1e-10) and, for the gradients, against plain autograd (GPyTorch's forward,
and torchgp's own unfused path).
"""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp.kernels as K
from torchgp import settings
from torchgp.errors import ShapeError

G = gpytorch.kernels
TOL = {"rtol": 1e-10, "atol": 1e-10}

BUILD = {
    "rbf": lambda M, d, b: M.RBFKernel(ard_num_dims=d, batch_shape=b),
    "matern12": lambda M, d, b: M.MaternKernel(nu=0.5, ard_num_dims=d, batch_shape=b),
    "matern32": lambda M, d, b: M.MaternKernel(nu=1.5, ard_num_dims=d, batch_shape=b),
    "matern52": lambda M, d, b: M.MaternKernel(nu=2.5, ard_num_dims=d, batch_shape=b),
    "rq": lambda M, d, b: M.RQKernel(ard_num_dims=d, batch_shape=b),
    "periodic": lambda M, d, b: M.PeriodicKernel(ard_num_dims=d, batch_shape=b),
    "scale_rbf": lambda M, d, b: M.ScaleKernel(M.RBFKernel(ard_num_dims=d, batch_shape=b), batch_shape=b),
    "scale_periodic": lambda M, d, b: M.ScaleKernel(M.PeriodicKernel(ard_num_dims=d, batch_shape=b)),
    "scale_product": lambda M, d, b: M.ScaleKernel(
        M.RBFKernel(ard_num_dims=d, batch_shape=b) * M.MaternKernel(nu=1.5, ard_num_dims=d, batch_shape=b)
    ),
}


def _pair(name: str, d: int, b: torch.Size, seed: int = 0):
    kg = BUILD[name](G, d, b).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in kg.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    kt = BUILD[name](K, d, b).double()
    kt.load_state_dict(kg.state_dict())
    return kt, kg


CASES = [(n, d, b) for n in BUILD for d in (2, 3) for b in ((), (3,))]


@pytest.mark.parametrize(("name", "d", "batch"), CASES, ids=[f"{n}-d{d}-b{b}" for n, d, b in CASES])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_matches_gpytorch(name, d, batch, fused):
    kt, kg = _pair(name, d, torch.Size(batch))
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, d, dtype=torch.float64, generator=gen)
    y = torch.randn(4, d, dtype=torch.float64, generator=gen)
    with settings.fused_kernels(fused), torch.no_grad():
        for a, b in ((x, x), (x, y)):
            out = kt(a, b, last_dim_is_batch=True)
            assert out.shape == torch.Size([*batch, d, a.shape[0], b.shape[0]])
            torch.testing.assert_close(out.to_dense(), kg(a, b, last_dim_is_batch=True).to_dense(), **TOL)
        for a, b in ((x, x), (x, x + 0.3)):
            got = kt(a, b, diag=True, last_dim_is_batch=True)
            torch.testing.assert_close(got, kg(a, b, diag=True, last_dim_is_batch=True), **TOL)


@pytest.mark.parametrize("name", ["rbf", "periodic", "rq"])
def test_dimension_j_is_the_one_dimensional_kernel_with_lengthscale_j(name):
    kt, _ = _pair(name, 3, torch.Size([]), seed=5)
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = kt(x, last_dim_is_batch=True).to_dense()
        for j in range(3):
            one = BUILD[name](K, None, torch.Size([])).double()
            one.lengthscale = kt.lengthscale[..., j : j + 1]
            if name == "periodic":
                one.period_length = kt.period_length[..., j : j + 1]
            if name == "rq":
                one.alpha = kt.alpha
            torch.testing.assert_close(out[j], one(x[:, j : j + 1]).to_dense(), **TOL)


@pytest.mark.parametrize("name", ["rbf", "matern52", "rq", "periodic", "scale_rbf", "scale_product"])
def test_gradients_match_plain_autograd(name):
    kt, kg = _pair(name, 2, torch.Size([3]), seed=7)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 2, dtype=torch.float64, generator=gen)
    y = torch.randn(4, 2, dtype=torch.float64, generator=gen)
    w = torch.randn(3, 2, 5, 4, dtype=torch.float64, generator=gen)
    wd = torch.randn(3, 2, 5, dtype=torch.float64, generator=gen)

    def grads(k, fused=True):
        xx = x.clone().requires_grad_(True)
        with settings.fused_kernels(fused) if k is kt else torch.enable_grad():
            loss = (k(xx, y, last_dim_is_batch=True).to_dense() * w).sum()
            loss = loss + (k(xx, xx, diag=True, last_dim_is_batch=True) * wd).sum()
            loss = loss + k(xx, last_dim_is_batch=True).to_dense().square().sum()
        params = [p for _, p in sorted(k.named_parameters())]
        return torch.autograd.grad(loss, [xx, *params])

    reference = grads(kg)
    for fused in (True, False):
        for got, want in zip(grads(kt, fused), reference, strict=True):
            torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_gradcheck_in_inputs_and_hyperparameters(fused):
    k = K.ScaleKernel(K.RQKernel(ard_num_dims=2, batch_shape=torch.Size([2])), batch_shape=torch.Size([2])).double()
    gen = torch.Generator().manual_seed(6)
    names = ["base_kernel.raw_lengthscale", "base_kernel.raw_alpha", "raw_outputscale"]
    params = dict(k.named_parameters())
    ps = tuple(
        (params[n].detach() + 0.3 * torch.randn(params[n].shape, generator=gen, dtype=torch.float64)) for n in names
    )
    x = torch.randn(3, 2, dtype=torch.float64, generator=gen)
    y = torch.randn(4, 2, dtype=torch.float64, generator=gen)

    def f(a, b, *values):
        with settings.lazily_evaluate_kernels(False), settings.fused_kernels(fused):
            out = torch.func.functional_call(
                k, dict(zip(names, values, strict=True)), (a, b), {"last_dim_is_batch": True}
            )
        return out if isinstance(out, torch.Tensor) else out.to_dense()

    inputs = tuple(t.clone().requires_grad_(True) for t in (x, y, *ps))
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradcheck(lambda a, *v: f(a, a, *v), (inputs[0], *inputs[2:]))


def test_features_of_another_width_need_their_own_split():
    class Doubled(K.RBFKernel):
        def scaled(self, x):
            return torch.cat([x, x], dim=-1) / self.lengthscale

    with pytest.raises(ShapeError, match="_per_dim"):
        Doubled()(torch.randn(4, 2), last_dim_is_batch=True).to_dense()
