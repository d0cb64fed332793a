"""blockwise_matmul: equals the dense product and dense autograd, never holding K."""

import pytest
import torch

from torchgp import settings
from torchgp.linalg.blockwise import added_diag_matmul, blockwise_matmul, kernel_matmul_nograd
from torchgp.linalg.operators import AddedDiagOperator, KernelOperator


class StandInRBF:
    """Minimal kernel: ARD RBF times an outputscale, parameters as tensors requiring grad."""

    def __init__(self, lengthscale, outputscale=None):
        self.lengthscale = lengthscale
        self.outputscale = outputscale if outputscale is not None else torch.ones((), dtype=lengthscale.dtype)

    def parameters(self):
        return [p for p in (self.lengthscale, self.outputscale) if isinstance(p, torch.Tensor)]

    def output_shape(self, x1, x2, **params):
        return torch.Size([*torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2]), x1.shape[-2], x2.shape[-2]])

    def evaluate_block(self, x1, x2, diag=False, **params):
        a, b = x1 / self.lengthscale, x2 / self.lengthscale
        if diag:
            return self.outputscale * torch.ones(a.shape[:-1], dtype=a.dtype)
        return self.outputscale * torch.exp(-0.5 * (a.unsqueeze(-2) - b.unsqueeze(-3)).square().sum(-1))


def _setup(n=37, m=None, d=3, k=4, batch=()):
    ls = torch.tensor([0.7, 1.3, 0.9][:d], dtype=torch.float64, requires_grad=True)
    os_ = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    x1 = torch.randn(*batch, n, d, dtype=torch.float64, requires_grad=True)
    x2 = x1 if m is None else torch.randn(*batch, m, d, dtype=torch.float64, requires_grad=True)
    V = torch.randn(*batch, x2.shape[-2], k, dtype=torch.float64, requires_grad=True)
    return StandInRBF(ls, os_), x1, x2, V


@pytest.mark.parametrize("m", [None, 23])
@pytest.mark.parametrize("batch", [(), (2,)])
def test_blockwise_equals_dense_values_and_gradients(m, batch):
    kernel, x1, x2, V = _setup(m=m, batch=batch)
    G = torch.randn(*batch, x1.shape[-2], V.shape[-1], dtype=torch.float64)
    leaves = [V, kernel.lengthscale, kernel.outputscale, x1] + ([x2] if m is not None else [])
    dense = kernel.evaluate_block(x1, x2) @ V
    g_dense = torch.autograd.grad((dense * G).sum(), leaves)
    with settings.kernel_block_size(5):  # 8 blocks, the last one partial
        out = blockwise_matmul(KernelOperator(kernel, x1, x2), V)
        g_block = torch.autograd.grad((out * G).sum(), leaves)
    torch.testing.assert_close(out, dense, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_block, g_dense):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_gradcheck_tiny():
    kernel, x1, x2, V = _setup(n=6, d=2, k=2)

    def f(V, ls, os_, x):
        k = StandInRBF(ls, os_)
        return blockwise_matmul(KernelOperator(k, x, x), V)

    with settings.kernel_block_size(4):
        assert torch.autograd.gradcheck(f, (V, kernel.lengthscale, kernel.outputscale, x1))


def test_added_diag_noise_gradient():
    kernel, x1, _, V = _setup(n=20, d=3, k=3)
    raw = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    noise = torch.nn.functional.softplus(raw).expand(20)  # non-leaf diagonal, as a likelihood makes it
    G = torch.randn(20, 3, dtype=torch.float64)
    with settings.kernel_block_size(6):
        out = added_diag_matmul(AddedDiagOperator(KernelOperator(kernel, x1, x1), noise), V)
        g = torch.autograd.grad((out * G).sum(), [raw, kernel.lengthscale])
    noise = torch.nn.functional.softplus(raw).expand(20)
    dense = (kernel.evaluate_block(x1, x1) + torch.diag_embed(noise)) @ V
    g_dense = torch.autograd.grad((dense * G).sum(), [raw, kernel.lengthscale])
    torch.testing.assert_close(out, dense, rtol=1e-10, atol=1e-10)
    for a, b in zip(g, g_dense):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_transpose_product_of_rectangular_kernel():
    kernel, x1, x2, _ = _setup(n=17, m=11)
    G = torch.randn(17, 3, dtype=torch.float64)
    with settings.kernel_block_size(4):
        out = kernel_matmul_nograd(KernelOperator(kernel, x1, x2), G, transpose=True)
    torch.testing.assert_close(out, kernel.evaluate_block(x1, x2).mT @ G, rtol=1e-10, atol=1e-10)


def test_shape_mismatch_is_explained():
    kernel, x1, _, _ = _setup(n=8)
    with pytest.raises(ValueError, match="rows"):
        blockwise_matmul(KernelOperator(kernel, x1, x1), torch.randn(9, 2, dtype=torch.float64))
