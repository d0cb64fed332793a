"""The iterative MLL's backward frees the preconditioner after its first use, yet a retained graph still works."""

import torch

from tests.linalg.test_iterative import _problem
from torchgp import settings
from torchgp.linalg.inv_quad_logdet import inv_quad_logdet
from torchgp.linalg.operators import AddedDiagOperator, KernelOperator


def _grads_twice(X, y, kernel, raw_noise):
    n = X.shape[0]
    params = [*kernel.parameters(), raw_noise]
    with settings.max_cholesky_size(1), settings.max_preconditioner_size(40):
        op = AddedDiagOperator(KernelOperator(kernel, X, X), raw_noise.exp().expand(n))
        quad, logdet = inv_quad_logdet(op, y)
        loss = 0.5 * (quad + logdet)
        first = torch.autograd.grad(loss, params, retain_graph=True)
        second = torch.autograd.grad(loss, params)
    return torch.stack(first), torch.stack(second)


def test_second_backward_through_a_retained_graph_equals_the_first():
    X, y, kernel, raw_noise = _problem(400, lengthscale=0.2, noise=0.05)
    first, second = _grads_twice(X, y, kernel, raw_noise)
    assert torch.all(first != 0)
    torch.testing.assert_close(second, first, rtol=1e-12, atol=0)


def test_second_backward_matches_a_fresh_evaluation():
    X, y, kernel, raw_noise = _problem(400, lengthscale=0.2, noise=0.05, seed=3)
    _, second = _grads_twice(X, y, kernel, raw_noise)
    fresh, _ = _grads_twice(X, y, kernel, raw_noise)  # deterministic probes: the same estimate
    torch.testing.assert_close(second, fresh, rtol=1e-10, atol=0)
