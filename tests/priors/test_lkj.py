"""LKJ priors: log-densities equal GPyTorch's and ``torch.distributions.LKJCholesky``'s; sampling; batches."""

from __future__ import annotations

import gpytorch
import pytest
import torch

from tests._tol import assert_close
from torchgp import errors, priors

F64 = torch.float64


def _corr(n, batch=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(*batch, n, n + 2, generator=g, dtype=F64)
    S = A @ A.mT
    d = S.diagonal(dim1=-2, dim2=-1).sqrt()
    return S / (d.unsqueeze(-1) * d.unsqueeze(-2))


@pytest.mark.parametrize("eta", [0.5, 1.0, 2.5])
def test_lkj_cholesky_factor_prior_equals_torch_and_gpytorch(eta):
    C = _corr(4, (3,))
    L = torch.linalg.cholesky(C)
    ours = priors.LKJCholeskyFactorPrior(4, torch.tensor(eta, dtype=F64))
    ref = gpytorch.priors.LKJCholeskyFactorPrior(4, torch.tensor(eta, dtype=F64))
    want = torch.distributions.LKJCholesky(4, torch.tensor(eta, dtype=F64)).log_prob(L)
    assert_close(ours.log_prob(L), want)
    assert_close(ours.log_prob(L), ref.log_prob(L))
    assert ours.event_shape == (4, 4) and ours.batch_shape == ()
    assert isinstance(ours, torch.distributions.Distribution)
    s = ours.sample(torch.Size([5]))
    assert s.shape == (5, 4, 4)
    assert_close(s.pow(2).sum(-1), torch.ones(5, 4, dtype=F64))  # rows of a correlation factor have unit norm


@pytest.mark.parametrize("eta", [0.7, 3.0])
def test_lkj_prior_equals_gpytorch(eta):
    C = _corr(3, (2,), seed=1)
    ours, ref = (
        priors.LKJPrior(3, torch.tensor(eta, dtype=F64)),
        gpytorch.priors.LKJPrior(3, torch.tensor(eta, dtype=F64)),
    )
    assert_close(ours.log_prob(C), ref.log_prob(C))
    want = torch.distributions.LKJCholesky(3, torch.tensor(eta, dtype=F64)).log_prob(torch.linalg.cholesky(C))
    assert_close(ours.log_prob(C), want)
    torch.manual_seed(0)
    s = ours.sample(torch.Size([4]))
    assert s.shape == (4, 3, 3)
    assert_close(s.diagonal(dim1=-2, dim2=-1), torch.ones(4, 3, dtype=F64))
    assert torch.all(torch.linalg.eigvalsh(s) > 0)
    assert_close(ours.mean, torch.eye(3, dtype=F64))


def test_lkj_prior_density_is_proportional_to_det_power():
    # LKJCholesky's density of L (det(C)^{η-1} times the Jacobian of C ↦ L) is ∝ ∏_i L_ii^{n - i + 2η - 2}
    # (i = 1..n): log p minus that sum is the same constant for every C.
    eta, n = 1.7, 4
    C = _corr(n, (3,), seed=2)
    L = torch.linalg.cholesky(C)
    lp = priors.LKJPrior(n, torch.tensor(eta, dtype=F64)).log_prob(C)
    i = torch.arange(1, n + 1, dtype=F64)
    power = n - i + 2 * eta - 2
    expr = (power * L.diagonal(dim1=-2, dim2=-1).log()).sum(-1)
    assert_close(lp - expr, (lp - expr)[0].expand(3))


def test_lkj_batch_shapes():
    eta = torch.tensor([0.5, 2.0], dtype=F64)
    ours = priors.LKJPrior(3, eta)
    ref = gpytorch.priors.LKJPrior(3, eta)
    assert ours.batch_shape == ref.batch_shape == (2,)
    C = _corr(3, (2,), seed=3)
    assert_close(ours.log_prob(C), ref.log_prob(C))
    assert ours.sample().shape == (2, 3, 3) and ours.sample(torch.Size([5])).shape == (5, 2, 3, 3)
    big = priors.LKJPrior(3, 1.5).expand(torch.Size([4]))
    assert big.batch_shape == (4,) and big.log_prob(_corr(3, (4,))).shape == (4,)


def test_lkj_errors():
    p = priors.LKJPrior(3, 1.0)
    with pytest.raises(errors.ShapeError):
        p.log_prob(torch.eye(4))
    with pytest.raises(errors.InputError, match="correlation"):
        p.log_prob(2 * torch.eye(3))
    with pytest.raises(errors.InputError):
        priors.LKJPrior(1, 1.0)


def test_lkj_covariance_prior_is_lkj_plus_sd_density():
    n, eta = 3, torch.tensor(2.0, dtype=F64)
    sd_prior = priors.GammaPrior(torch.tensor(2.0, dtype=F64), torch.tensor(3.0, dtype=F64))
    p = priors.LKJCovariancePrior(n, eta, sd_prior)
    C = _corr(n, (2,), seed=4)
    sd = torch.tensor([[0.5, 1.0, 2.0], [0.3, 0.3, 0.7]], dtype=F64)
    S = sd.unsqueeze(-1) * C * sd.unsqueeze(-2)
    want = torch.distributions.LKJCholesky(n, eta).log_prob(torch.linalg.cholesky(C)) + torch.distributions.Gamma(
        torch.tensor(2.0, dtype=F64), torch.tensor(3.0, dtype=F64)
    ).log_prob(sd).sum(-1)
    assert_close(p.log_prob(S), want)
    # GPyTorch returns log p(C) + log p(σ_i) per i (shape (n,)) for one matrix; their sum over i counts
    # log p(C) n times. Ours is the joint: equal to GPyTorch's per-i values summed, less (n - 1) log p(C).
    ref = gpytorch.priors.LKJCovariancePrior(
        n, eta, gpytorch.priors.GammaPrior(torch.tensor(2.0, dtype=F64), torch.tensor(3.0, dtype=F64))
    )
    ref_lp = ref.log_prob(S[0])
    corr = ref.correlation_prior.log_prob(C[0])
    assert_close(p.log_prob(S[0]), ref_lp.sum() - (n - 1) * corr)
    torch.manual_seed(0)
    draws = p.sample(torch.Size([4000]))
    assert draws.shape == (4000, n, n)
    assert torch.all(torch.linalg.eigvalsh(draws) > 0)
    sds = draws.diagonal(dim1=-2, dim2=-1).sqrt()
    assert abs(sds.mean().item() - 2 / 3) < 0.03  # Gamma(2, 3) mean
    assert abs(torch.corrcoef(sds.T)[0, 1].item()) < 0.08  # independent per dimension
    assert_close(p.mean, torch.eye(n, dtype=F64) * (2 / 9 + 4 / 9))
    assert (draws.mean(0) - p.mean).abs().max() < 0.06


def test_lkj_covariance_prior_batches_and_errors():
    eta = torch.tensor([1.0, 2.0], dtype=F64)
    sd_prior = priors.GammaPrior(torch.full((2,), 2.0, dtype=F64), torch.full((2,), 3.0, dtype=F64))
    p = priors.LKJCovariancePrior(3, eta, sd_prior)
    s = p.sample(torch.Size([5]))
    assert s.shape == (5, 2, 3, 3)
    assert p.log_prob(s).shape == (5, 2)
    assert p.expand(torch.Size([2])).batch_shape == (2,)
    with pytest.raises(errors.ShapeError):
        priors.LKJCovariancePrior(3, eta, priors.GammaPrior(2.0, 3.0))
    with pytest.raises(errors.InputError):
        priors.LKJCovariancePrior(3, 1.0, torch.distributions.Gamma(2.0, 3.0))


def test_gradcheck_new_prior_log_densities():
    x = torch.tensor([0.2, -0.7, 1.5], dtype=F64, requires_grad=True)
    tau = torch.tensor(0.4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, t: priors.HorseshoePrior(t).log_prob(x), (x, tau))
    A = torch.randn(3, 3, dtype=F64)
    S = (A @ A.mT + torch.eye(3, dtype=F64)).requires_grad_(True)
    sd_prior = priors.GammaPrior(torch.tensor(2.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    p = priors.LKJCovariancePrior(3, torch.tensor(1.5, dtype=F64), sd_prior)
    assert torch.autograd.gradcheck(lambda S: p.log_prob(0.5 * (S + S.mT)), (S,))
