"""``settings.skip_logdet_forward`` on the Kronecker multitask path: no log-determinant value, the same gradient."""

from __future__ import annotations

import torch

import torchgp
from torchgp import settings


def _loss(skip: bool):
    torch.manual_seed(0)  # the task kernel's initial values are random draws
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, generator=g, dtype=torch.float64)
    y = torch.cat([torch.sin(5 * x), torch.cos(5 * x)], -1)
    k = torchgp.kernels.MultitaskKernel(torchgp.kernels.RBFKernel(), num_tasks=2, rank=1).double()
    with torch.no_grad():
        k.task_covar_module.covar_factor.copy_(torch.tensor([[0.7], [-0.4]], dtype=torch.float64))
    noise = torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=2).double()
    prior = torchgp.distributions.MultitaskMultivariateNormal(torch.zeros(12, 2, dtype=torch.float64), k(x))
    with settings.skip_logdet_forward(skip):
        lp = noise(prior).log_prob(y)
    params = [*k.parameters(), *noise.parameters()]
    grads = torch.autograd.grad(lp, params)
    return lp.detach(), grads, noise(prior).covariance_matrix.detach()


def test_value_drops_the_log_determinant_and_keeps_its_gradient():
    full, g_full, S = _loss(False)
    skipped, g_skip, _ = _loss(True)
    torch.testing.assert_close(skipped, full + 0.5 * torch.logdet(S), rtol=1e-10, atol=1e-10)
    for a, b in zip(g_skip, g_full):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
