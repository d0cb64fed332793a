"""``settings.linalg_dtypes``: float32 matrices are factorised in float64 by default (GPyTorch's rule)."""

from __future__ import annotations

import torch

import torchgp
from torchgp import settings
from torchgp.linalg._lapack import sym_eigh


def _spd32(m=12):
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(0, 1, m, dtype=torch.float64).unsqueeze(-1)
    K = torch.exp(-0.5 * (x - x.mT).square() / 0.3**2) + 1e-3 * torch.eye(m, dtype=torch.float64)
    return (K + 1e-4 * torch.rand(m, m, generator=g, dtype=torch.float64).diag().diag()).float()


def _strategy():
    class SVGP(torchgp.models.ApproximateGP):
        def __init__(self):
            z = torch.rand(12, 1)
            q = torchgp.variational.CholeskyVariationalDistribution(12)
            super().__init__(torchgp.variational.VariationalStrategy(self, z, q))

    return SVGP().variational_strategy


def test_variational_cholesky_runs_in_the_wide_dtype_by_default():
    K = _spd32()
    vs = _strategy()
    jitter = vs._jitter(torch.float32)
    A = K + jitter * torch.eye(12)
    wide = torch.linalg.cholesky(A.double()).float()
    narrow = torch.linalg.cholesky(A)
    assert not torch.equal(wide, narrow)  # the two routes differ at float32 rounding
    assert torch.equal(vs._chol_zz(K), wide)
    with settings.linalg_dtypes(cholesky=torch.float32):
        assert torch.equal(vs._chol_zz(K), narrow)
    assert vs._chol_zz(K).dtype == torch.float32


def test_symmetric_eigendecompositions_run_in_the_wide_dtype_by_default():
    K = _spd32(40)
    lam, Q = sym_eigh(K)
    lam64, Q64 = torch.linalg.eigh(K.double())
    assert lam.dtype == torch.float32
    torch.testing.assert_close(lam, lam64.float(), rtol=0, atol=0)
    with settings.linalg_dtypes(symeig=torch.float32):
        lam32, _ = sym_eigh(K)
    assert lam32.dtype == torch.float32
    assert (lam32.double() - lam64).abs().max() > (lam.double() - lam64).abs().max()
