"""Tile products from feature rows (linalg.kernel_tiles) equal the dense kernel product and the module's tiles."""

import copy

import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp import settings
from torchgp.linalg.kernel_tiles import exp_tile_rows
from torchgp.linalg.operators import KernelOperator
from torchgp.linalg.operators.kernel import kernel_matmul_nograd


def _rbf(d, batch=(), scale=True):
    k = torchgp.kernels.RBFKernel(ard_num_dims=d, batch_shape=torch.Size(batch))
    k.lengthscale = torch.linspace(0.4, 1.1, d).expand(*batch, 1, d)
    if not scale:
        return k
    s = torchgp.kernels.ScaleKernel(k)
    s.outputscale = torch.linspace(0.7, 1.9, max(1, int(torch.Size(batch).numel()))).reshape(batch)
    return s


def _dense_product(kernel, x1, x2, V, transpose=False):
    """``K V`` (or ``Kᵀ V``) in float64 from the kernel module's own dense matrix."""
    k64 = copy.deepcopy(kernel).double()
    a = x1.double()
    b = a if x2 is x1 else x2.double()
    K = k64.evaluate_block(a, b)
    return (K.mT if transpose else K) @ V.double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("batch", [(), (2,)])
def test_tiles_equal_dense_product(dtype, symmetric, batch):
    g = torch.Generator().manual_seed(0)
    d = 3
    kernel = _rbf(d, batch).to(dtype)
    x1 = torch.rand(*batch, 37, d, generator=g, dtype=torch.float64).to(dtype) * 3 + 5  # offset: shift matters
    x2 = x1 if symmetric else (torch.rand(*batch, 23, d, generator=g, dtype=torch.float64).to(dtype) * 3 + 5)
    V = torch.randn(*batch, x2.shape[-2], 4, generator=g, dtype=torch.float64)
    op = KernelOperator(kernel, x1, x2)
    assert exp_tile_rows(op, op.batch_shape) is not None
    with settings.kernel_block_size(5):  # many tiles, the last ones partial
        out = kernel_matmul_nograd(op, V)
        with settings.fast_kernel_tiles(False):
            module_tiles = kernel_matmul_nograd(op, V)
    ref = _dense_product(kernel, x1, x2, V)
    assert out.dtype == torch.float64 and out.shape == ref.shape
    assert_close(out, ref, dtype=dtype, loose=10)
    assert_close(out, module_tiles, dtype=dtype, loose=10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transpose_and_kernel_dtype_columns(dtype):
    g = torch.Generator().manual_seed(1)
    kernel = _rbf(2).to(dtype)
    x1 = torch.rand(19, 2, generator=g, dtype=torch.float64).to(dtype)
    x2 = torch.rand(13, 2, generator=g, dtype=torch.float64).to(dtype)
    op = KernelOperator(kernel, x1, x2)
    G = torch.randn(19, 3, generator=g, dtype=torch.float64).to(dtype)  # columns in the kernel's dtype
    with settings.kernel_block_size(4):
        out = kernel_matmul_nograd(op, G, transpose=True)
    assert out.dtype == dtype and out.shape == (13, 3)
    assert_close(out.double(), _dense_product(kernel, x1, x2, G, transpose=True), dtype=dtype, loose=10)


def test_kernel_batch_of_hyperparameters_broadcasts_over_inputs():
    g = torch.Generator().manual_seed(2)
    kernel = _rbf(2, batch=(3,)).double()
    x = torch.rand(11, 2, generator=g, dtype=torch.float64)  # one set of inputs, three kernels
    V = torch.randn(11, 2, generator=g, dtype=torch.float64)
    op = KernelOperator(kernel, x, x)
    with settings.kernel_block_size(4):
        out = kernel_matmul_nograd(op, V)
    assert out.shape == (3, 11, 2)
    assert_close(out, _dense_product(kernel, x, x, V))


def test_outputscale_batch_wider_than_the_features():
    g = torch.Generator().manual_seed(5)
    kernel = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(), batch_shape=torch.Size([3])).double()
    kernel.outputscale = torch.tensor([0.5, 1.0, 2.0])
    x1 = torch.rand(10, 2, generator=g, dtype=torch.float64)
    x2 = torch.rand(7, 2, generator=g, dtype=torch.float64)
    for b in (x1, x2):
        op = KernelOperator(kernel, x1, b)
        V = torch.randn(b.shape[0], 2, generator=g, dtype=torch.float64)
        with settings.kernel_block_size(6):
            out = kernel_matmul_nograd(op, V)
        assert out.shape == (3, 10, 2)
        assert_close(out, _dense_product(kernel, x1, b, V))


@pytest.mark.parametrize(
    "make",
    [
        lambda: torchgp.kernels.RBFKernel(),
        lambda: torchgp.kernels.RBFKernel(active_dims=[0, 2]),
        lambda: torchgp.kernels.ScaleKernel(torchgp.kernels.PeriodicKernel()),
        lambda: torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(active_dims=[1])),
    ],
)
def test_exponential_kernels_take_the_feature_route(make):
    g = torch.Generator().manual_seed(3)
    kernel = make().double()
    x = torch.rand(17, 3, generator=g, dtype=torch.float64)
    V = torch.randn(17, 2, generator=g, dtype=torch.float64)
    op = KernelOperator(kernel, x, x)
    assert exp_tile_rows(op, op.batch_shape) is not None
    with settings.kernel_block_size(6):
        out = kernel_matmul_nograd(op, V)
    assert_close(out, _dense_product(kernel, x, x, V))


@pytest.mark.parametrize(
    "make",
    [
        lambda: torchgp.kernels.MaternKernel(nu=2.5),
        lambda: torchgp.kernels.RBFKernel() * torchgp.kernels.LinearKernel(),
        lambda: torchgp.kernels.ScaleKernel(torchgp.kernels.RQKernel()),
    ],
)
def test_other_kernels_keep_the_module_route(make):
    kernel = make().double()
    x = torch.rand(9, 2, dtype=torch.float64)
    op = KernelOperator(kernel, x, x)
    assert exp_tile_rows(op, op.batch_shape) is None
    with settings.kernel_block_size(4):
        out = kernel_matmul_nograd(op, torch.eye(9, dtype=torch.float64))
    assert_close(out, kernel.evaluate_block(x, x).detach())


def test_unfused_setting_keeps_the_module_route():
    kernel = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel())
    x = torch.rand(5, 2)
    with settings.fused_kernels(False):
        assert exp_tile_rows(KernelOperator(kernel, x, x), torch.Size()) is None


def test_blockwise_matmul_gradients_through_the_feature_route():
    from torchgp.linalg.blockwise import blockwise_matmul

    g = torch.Generator().manual_seed(6)
    kernel = _rbf(2).double()
    x = torch.rand(15, 2, generator=g, dtype=torch.float64, requires_grad=True)
    V = torch.randn(15, 3, generator=g, dtype=torch.float64, requires_grad=True)
    G = torch.randn(15, 3, generator=g, dtype=torch.float64)
    leaves = [V, x, *kernel.parameters()]
    dense = kernel.evaluate_block(x, x) @ V
    g_dense = torch.autograd.grad((dense * G).sum(), leaves)
    with settings.kernel_block_size(8):
        out = blockwise_matmul(KernelOperator(kernel, x, x), V)
        g_tiles = torch.autograd.grad((out * G).sum(), leaves)
    assert_close(out, dense)
    for a, b in zip(g_tiles, g_dense):
        assert_close(a, b)
