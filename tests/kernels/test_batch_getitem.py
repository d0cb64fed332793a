"""``kernel[index]`` on a batch of kernels: against the batch of the full matrix and against GPyTorch's indexing."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp.kernels as K
from tests._tol import assert_close
from tests.kernels._factories import CASES as CASES_ALL
from torchgp.constraints import Interval
from torchgp.errors import ShapeError

G = gpytorch.kernels


def _pair(name: str, b: torch.Size):
    """(torchgp kernel, GPyTorch kernel) of batch shape ``b`` with the same random hyperparameters."""
    build = {
        "rbf_ard": lambda M: M.RBFKernel(ard_num_dims=2, batch_shape=b),
        "matern": lambda M: M.MaternKernel(nu=1.5, batch_shape=b),
        "rq": lambda M: M.RQKernel(ard_num_dims=2, batch_shape=b),
        "periodic": lambda M: M.PeriodicKernel(ard_num_dims=2, batch_shape=b),
        "scale_rbf": lambda M: M.ScaleKernel(M.RBFKernel(batch_shape=b), batch_shape=b),
        "sum": lambda M: M.RBFKernel(batch_shape=b) + M.MaternKernel(nu=2.5, ard_num_dims=2, batch_shape=b),
        "product": lambda M: M.RBFKernel(ard_num_dims=2, batch_shape=b) * M.RQKernel(batch_shape=b),
        "scale_product": lambda M: M.ScaleKernel(
            M.PeriodicKernel(batch_shape=b) * M.RBFKernel(batch_shape=b), batch_shape=b
        ),
    }[name]
    kg = build(G).double()
    gen = torch.Generator().manual_seed(hash(name) % 1000)
    with torch.no_grad():
        for p in kg.parameters():
            p.copy_(0.6 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    kt = build(K).double()
    kt.load_state_dict(kg.state_dict())
    return kt, kg


NAMES = ["rbf_ard", "matern", "rq", "periodic", "scale_rbf", "sum", "product", "scale_product"]
INDICES = {
    (3,): [1, -1, slice(1, 3), [0, 2], (Ellipsis, 2), slice(0, 1)],
    (2, 3): [0, (1, 2), (Ellipsis, 0), (slice(None), 1), slice(0, 1), (0, [0, 2]), (1, slice(1, None))],
}


def _on_batch(t: torch.Tensor, index, nbatch: int) -> torch.Tensor:
    """``t[index]`` with ``...`` standing for batch dimensions only (the reference for the kernel's index)."""
    if isinstance(index, tuple) and Ellipsis in index:
        i = index.index(Ellipsis)
        index = index[:i] + (slice(None),) * (nbatch - len(index) + 1) + index[i + 1 :]
    return t[index]


CASES = [(n, b, i) for n in NAMES for b, idx in INDICES.items() for i in idx]


@pytest.mark.parametrize(("name", "batch", "index"), CASES, ids=[f"{n}-{b}-{i}" for n, b, i in CASES])
def test_indexed_kernel_is_the_indexed_batch_and_gpytorchs(name, batch, index):
    kt, kg = _pair(name, torch.Size(batch))
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sub_t = kt[index]
    assert sub_t.batch_shape == torch.empty(batch)[index].shape
    with torch.no_grad():
        full = kt(x).to_dense()
        assert_close(sub_t(x).to_dense(), _on_batch(full, index, len(batch)))
        assert_close(sub_t(x, diag=True), _on_batch(kt(x, diag=True), index, len(batch)))
    if isinstance(index, tuple) and Ellipsis in index:
        return  # GPyTorch 1.15 applies '...' to each parameter's own trailing dimensions, not to the batch
    sub_g = kg[index]
    assert sub_t.batch_shape == sub_g.batch_shape
    with torch.no_grad():
        assert_close(sub_t(x).to_dense(), sub_g(x).to_dense())
    names_t = {n: p.shape for n, p in sub_t.named_parameters()}
    assert names_t == {n: p.shape for n, p in sub_g.named_parameters()}


def test_ellipsis_indexes_the_batch_not_the_hyperparameters():
    k = K.RBFKernel(ard_num_dims=2, batch_shape=torch.Size([2, 3]))
    with torch.no_grad():
        k.lengthscale = torch.rand(2, 3, 1, 2) + 0.5
    sub = k[..., 1]
    assert sub.batch_shape == torch.Size([2]) and sub.lengthscale.shape == torch.Size([2, 1, 2])
    assert_close(sub.lengthscale, k.lengthscale[:, 1])


@pytest.mark.parametrize("module", [K, G], ids=["torchgp", "gpytorch"])
def test_indexed_parameters_are_independent_leaf_copies(module):
    # GPyTorch's indexed kernel holds new leaf Parameters in their own storage; torchgp's does the same
    k = module.RBFKernel(ard_num_dims=2, batch_shape=torch.Size([3])).double()
    sub = k[1]
    p, q = k.raw_lengthscale, sub.raw_lengthscale
    assert q.is_leaf and q.requires_grad and isinstance(q, torch.nn.Parameter)
    assert q.untyped_storage().data_ptr() != p.untyped_storage().data_ptr()
    assert torch.equal(q, p[1])
    with torch.no_grad():
        q.add_(1.0)
    assert not torch.equal(q, p[1])  # the original kept its values
    sub(torch.randn(4, 2, dtype=torch.float64)).to_dense().sum().backward()
    assert q.grad is not None and p.grad is None


def test_kernel_without_batch_shape_returns_itself():
    for k in (K.RBFKernel(), K.ScaleKernel(K.MaternKernel()), K.RBFKernel() + K.RQKernel()):
        assert k[0] is k and k[..., 1:] is k


def test_unbatched_base_kernel_is_kept_and_gpytorch_agrees():
    kt, kg = K.ScaleKernel(K.RBFKernel(), batch_shape=torch.Size([3])).double(), None
    kg = G.ScaleKernel(G.RBFKernel(), batch_shape=torch.Size([3])).double()
    with torch.no_grad():
        kg.raw_outputscale.copy_(torch.tensor([-0.3, 0.2, 0.9]))
        kg.base_kernel.raw_lengthscale.fill_(0.4)
    kt.load_state_dict(kg.state_dict())
    x = torch.randn(4, 1, dtype=torch.float64)
    sub = kt[2]
    assert sub.batch_shape == torch.Size([]) and sub.base_kernel.batch_shape == torch.Size([])
    assert sub.base_kernel.raw_lengthscale.shape == kt.base_kernel.raw_lengthscale.shape
    with torch.no_grad():
        assert_close(sub(x).to_dense(), kt(x).to_dense()[2])
        assert_close(sub(x).to_dense(), kg[2](x).to_dense())


def test_batched_constraint_bounds_are_indexed_and_active_dims_kept():
    lo = torch.tensor([0.1, 0.2, 0.3]).reshape(3, 1, 1)
    k = K.RBFKernel(batch_shape=torch.Size([3]), active_dims=[0, 2], lengthscale_constraint=Interval(lo, lo + 5))
    sub = k[[2, 0]]
    assert torch.equal(sub.raw_lengthscale_constraint.lower_bound, lo[[2, 0]])
    assert torch.equal(sub.active_dims, k.active_dims)
    x = torch.randn(4, 3)
    with torch.no_grad():
        assert_close(sub(x).to_dense(), k(x).to_dense()[[2, 0]])
        assert_close(sub.lengthscale, k.lengthscale[[2, 0]])


def test_bad_indices_are_refused():
    k = K.RBFKernel(batch_shape=torch.Size([3]))
    with pytest.raises(IndexError, match="batch dimensions only"):
        k[0, 1]
    with pytest.raises(IndexError):
        k[3]
    with pytest.raises(IndexError, match="one"):
        k[..., ...]
    mixed = K.ScaleKernel(K.RBFKernel(batch_shape=torch.Size([3])), batch_shape=torch.Size([2, 3]))
    with pytest.raises(ShapeError, match="full batch shape or none"):
        mixed[0]


def test_kernels_are_not_iterable():
    for k in (K.RBFKernel(), K.RBFKernel(batch_shape=torch.Size([2]))):
        with pytest.raises(TypeError, match="not iterable"):
            iter(k)


BATCHED = [c for c in CASES_ALL if c.supports_batch]


@pytest.mark.parametrize("case", BATCHED, ids=[c.name for c in BATCHED])
def test_every_batched_kernel_indexes_as_its_matrix(case):
    k = case.make(batch_shape=torch.Size([3]))
    if k.batch_shape != torch.Size([3]):
        assert k[1] is k  # a wrapper without a batch shape of its own (the structure kernels) is not indexed
        return
    x = case.inputs(6, case.dims, dtype=torch.float64, seed=2)
    with torch.no_grad():
        full = k(x).to_dense()
        for index in (1, slice(0, 2), [2, 0]):
            sub = k[index]
            assert sub.batch_shape == torch.empty(3)[index].shape
            assert_close(sub(x).to_dense(), full[index])


def test_newton_girard_indexes_with_its_base_kernel_and_matches_gpytorch():
    b = torch.Size([3])
    kg = G.NewtonGirardAdditiveKernel(G.RBFKernel(batch_shape=b), num_dims=2, max_degree=2, batch_shape=b).double()
    with torch.no_grad():
        for p in kg.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3), dtype=p.dtype))
    kt = K.NewtonGirardAdditiveKernel(K.RBFKernel(batch_shape=b), num_dims=2, max_degree=2, batch_shape=b).double()
    kt.load_state_dict(kg.state_dict())
    x = torch.randn(5, 2, dtype=torch.float64)
    with torch.no_grad():
        assert_close(kt[1](x).to_dense(), kt(x).to_dense()[1])
        # GPyTorch's NewtonGirardAdditiveKernel differs from torchgp's by ~1e-7 in float64 here, indexed or not
        torch.testing.assert_close(kt[1](x).to_dense(), kg[1](x).to_dense(), rtol=1e-6, atol=1e-6)
