"""``settings.ciq_samples``: MultivariateNormal.rsample through the CIQ symmetric root K^{1/2} ε."""

import torch

import torchgp

F64 = torch.float64


def _mvn(n=25, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, generator=g, dtype=F64)
    K = torchgp.kernels.RBFKernel().double()(X).to_dense().detach() + 0.1 * torch.eye(n, dtype=F64)
    mean = torch.randn(n, generator=g, dtype=F64)
    return torchgp.distributions.MultivariateNormal(mean, K), K, mean


def test_ciq_samples_equal_the_symmetric_root():
    mvn, K, mean = _mvn()
    eps = torch.randn(7, 25, generator=torch.Generator().manual_seed(1), dtype=F64)
    with torchgp.settings.ciq_samples(True), torchgp.settings.minres_tolerance(1e-10):
        s = mvn.rsample(torch.Size([7]), base_samples=eps)
    ev, V = torch.linalg.eigh(K)
    root = V @ torch.diag(ev.sqrt()) @ V.T  # the symmetric square root K^{1/2}
    ref = mean + eps @ root
    assert torch.allclose(s, ref, rtol=0, atol=1e-6 * float(ref.abs().max()))
    # the default path draws from the Cholesky factor instead: a different sample with the same covariance
    assert not torch.allclose(mvn.rsample(torch.Size([7]), base_samples=eps), ref, atol=1e-3)


def test_ciq_samples_are_differentiable_in_the_covariance():
    mvn, K, mean = _mvn(n=8)
    A = K.clone().requires_grad_(True)
    eps = torch.randn(3, 8, generator=torch.Generator().manual_seed(2), dtype=F64)
    with torchgp.settings.ciq_samples(True), torchgp.settings.minres_tolerance(1e-10):
        s = torchgp.distributions.MultivariateNormal(mean, A).rsample(torch.Size([3]), base_samples=eps)
    s.sum().backward()

    def sym_root_sum(M):
        M = 0.5 * (M + M.mT)
        ev, V = torch.linalg.eigh(M)
        return (mean + eps @ (V @ torch.diag(ev.sqrt()) @ V.T)).sum()

    B = K.clone().requires_grad_(True)
    sym_root_sum(B).backward()
    g_ref = 0.5 * (B.grad + B.grad.mT)
    g = 0.5 * (A.grad + A.grad.mT)
    assert torch.allclose(g, g_ref, atol=1e-5 * float(g_ref.abs().max()))
