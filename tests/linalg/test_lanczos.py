"""Lanczos from CG coefficients and stochastic Lanczos quadrature of log|A|."""

import torch

from torchgp import settings
from torchgp.linalg.cg import pcg
from torchgp.linalg.lanczos import lanczos_quadrature, lanczos_tridiag_from_cg, slq_logdet
from torchgp.linalg.operators import DenseOperator
from torchgp.linalg.pivoted_cholesky import build_preconditioner


def _kernel_matrix(n, noise=0.1):
    X = torch.rand(n, 2, dtype=torch.float64)
    K = torch.exp(-0.5 * torch.cdist(X, X).square() / 0.3**2)
    return K, K + noise * torch.eye(n, dtype=torch.float64)


def test_tridiagonal_has_the_ritz_values_and_exact_quadrature():
    # With as many Lanczos steps as distinct eigenvalues, Gauss quadrature is exact: zᵀ log(A) z.
    Q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    A = Q @ torch.diag(torch.arange(1.0, 13.0, dtype=torch.float64)) @ Q.T
    z = torch.randn(12, 1, dtype=torch.float64)
    _, info = pcg(lambda V: A @ V, z, tol=1e-13, max_iter=12, record=True)
    T = lanczos_tridiag_from_cg(info)
    torch.testing.assert_close(torch.linalg.eigvalsh(T[0]), torch.arange(1.0, 13.0, dtype=torch.float64))
    evals, evecs = torch.linalg.eigh(A)
    exact = (z.T @ evecs @ torch.diag(evals.log()) @ evecs.T @ z).squeeze()
    torch.testing.assert_close(lanczos_quadrature(T, info.rz0)[0], exact, rtol=1e-8, atol=1e-8)


def test_slq_logdet_close_to_torch_logdet():
    _, A = _kernel_matrix(300)
    exact = torch.logdet(A)
    with settings.num_trace_samples(32):
        plain = slq_logdet(lambda V: A @ V, 300, tol=1e-6)
        pre = build_preconditioner(
            DenseOperator(A - 0.1 * torch.eye(300, dtype=torch.float64)),
            torch.full((300,), 0.1, dtype=torch.float64),
            rank=20,
        )
        conditioned = slq_logdet(lambda V: A @ V, 300, preconditioner=pre, tol=1e-6)
    assert abs((plain - exact) / exact) < 0.03
    assert abs((conditioned - exact) / exact) < 0.003  # the preconditioner takes most of log|A| exactly


def test_deterministic_probes_repeat():
    _, A = _kernel_matrix(100)
    a = slq_logdet(lambda V: A @ V, 100, num_probes=4)
    b = slq_logdet(lambda V: A @ V, 100, num_probes=4)
    assert torch.equal(a, b)
    with settings.deterministic_probes(False):
        c = slq_logdet(lambda V: A @ V, 100, num_probes=4)
        d = slq_logdet(lambda V: A @ V, 100, num_probes=4)
    assert not torch.equal(c, d)
