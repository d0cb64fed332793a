"""GPyTorch-style uses of the (multitask) multivariate normal and of likelihood expectations, with GPyTorch 1.15
and torchgp; where GPyTorch 1.15 is wrong, the reference is a dense or numerical one."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.compat._harness import assert_same, gpytorch, run_both

DT = torch.float64


def _two_mvns(gp, batch=()):
    out = []
    for _ in range(2):
        a = torch.randn(*batch, 5, 5, dtype=DT)
        out.append(gp.distributions.MultivariateNormal(torch.randn(*batch, 5, dtype=DT), a @ a.mT + torch.eye(5)))
    return out


def test_multitask_normal_from_independent_mvns():
    def program(gp, share):
        d1, d2 = _two_mvns(gp)
        mt = gp.distributions.MultitaskMultivariateNormal.from_independent_mvns([d1, d2])
        lower, upper = mt.confidence_region()
        samples = mt.rsample(torch.Size([3]), base_samples=torch.randn(3, 5, 2, dtype=DT))
        ind = mt.to_data_independent_dist()
        return {
            "mean": mt.mean,
            "var": mt.variance,
            "cov": mt.covariance_matrix,
            "lower": lower,
            "upper": upper,
            "samples": samples,
            "independent_cov": ind.covariance_matrix,
            "entropy": mt.entropy(),
            "expanded_mean": mt.expand(torch.Size([2])).mean,
        }

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "index",
    [(0,), (0, 2), (1, slice(None), 1), (slice(None), 3), (Ellipsis, 3, slice(None)), (0, slice(1, 3)), (..., 1)],
    ids=str,
)
def test_multitask_normal_indexing(index):
    def program(gp, share):
        a = torch.randn(3, 10, 10, dtype=DT)
        mt = gp.distributions.MultitaskMultivariateNormal(torch.randn(3, 5, 2, dtype=DT), a @ a.mT + torch.eye(10))
        sub = mt[index]
        return {"mean": sub.mean, "cov": sub.covariance_matrix, "multitask": torch.tensor(sub.event_shape.numel())}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-10, atol=1e-10)


def test_task_major_log_prob_is_the_sum_of_the_tasks():
    # GPyTorch 1.15 reorders the value of a task-major (interleaved=False) multitask normal with a view instead of a
    # transpose, so its log_prob scrambles points and tasks; the reference is the sum of the independent tasks
    def program(gp, share):
        d1, d2 = _two_mvns(gp)
        y = torch.randn(4, 5, 2, dtype=DT)
        mt = gp.distributions.MultitaskMultivariateNormal.from_independent_mvns([d1, d2])
        return {"log_prob": mt.log_prob(y), "reference": d1.log_prob(y[..., 0]) + d2.log_prob(y[..., 1])}

    ref, ours = run_both(program)
    assert_close(ours["log_prob"], ours["reference"])
    assert not torch.allclose(ref["log_prob"], ref["reference"])
    torch.testing.assert_close(ours["reference"], ref["reference"])


def test_repeated_mvn_log_prob():
    def program(gp, share):
        d1, _ = _two_mvns(gp, (2,))
        rep = gp.distributions.MultitaskMultivariateNormal.from_repeated_mvn(d1, num_tasks=3)
        return {"log_prob": rep.log_prob(torch.randn(2, 5, 3, dtype=DT)), "mean": rep.mean, "var": rep.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-10, atol=1e-10)


def test_batch_mvn_covariance_row_order():
    def program(gp, share):
        d1, _ = _two_mvns(gp, (2,))
        mt = gp.distributions.MultitaskMultivariateNormal.from_batch_mvn(d1)
        return {"cov": mt.covariance_matrix}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-10, atol=1e-10)


def test_multivariate_normal_arithmetic_and_kl():
    def program(gp, share):
        d1, d2 = _two_mvns(gp)
        return {
            "kl": torch.distributions.kl_divergence(d1, d2),
            "sum_cov": (d1 + d2).covariance_matrix,
            "scaled_cov": (d1 * 2.0).covariance_matrix,
            "shifted_mean": (d1 + 1.0).mean,
            "stddev": d1.stddev,
            "sample": d1.rsample(torch.Size([2]), base_samples=torch.randn(2, 5, dtype=DT)),
            "log_prob": d1.log_prob(torch.randn(3, 5, dtype=DT)),
            "region": torch.stack(d1.confidence_region()),
        }

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-10, atol=1e-10)


def test_multivariate_normal_base_samples():
    def program(gp, share):
        d1, _ = _two_mvns(gp)
        base = d1.get_base_samples(torch.Size([4]))
        return {
            "base": base,
            "sample": d1.rsample(torch.Size([4]), base_samples=base),
            "base_shape": torch.tensor(d1.base_sample_shape),
            "precision": d1.precision_matrix,
        }

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-10, atol=1e-10)


def test_bernoulli_expected_log_prob_is_the_integral():
    # GPyTorch 1.15 evaluates log Φ(±f) through Bernoulli(probs=Φ(f)), whose clamped probabilities lose up to
    # ~1e-4 at the far quadrature nodes; the reference is E_q[log Φ(y f)] on a fine grid
    torch.manual_seed(0)
    mean, var = 2 * torch.randn(6, dtype=DT), 0.1 + torch.rand(6, dtype=DT)
    y = (torch.rand(6) > 0.5).to(DT)
    q = torchgp.distributions.MultivariateNormal(mean, torch.diag_embed(var))
    grid = torch.linspace(-12, 12, 200001, dtype=DT).unsqueeze(-1) * var.sqrt() + mean
    density = torch.exp(-0.5 * (grid - mean).pow(2) / var) / (2 * torch.pi * var).sqrt()
    reference = torch.trapezoid(density * torch.special.log_ndtr((2 * y - 1) * grid), grid, dim=0)
    assert_close(torchgp.likelihoods.BernoulliLikelihood().expected_log_prob(y, q), reference, loose=1e2)
    theirs = gpytorch.likelihoods.BernoulliLikelihood().expected_log_prob(
        y, gpytorch.distributions.MultivariateNormal(mean, torch.diag_embed(var))
    )
    torch.testing.assert_close(theirs, reference, rtol=0, atol=1e-3)  # GPyTorch: close, not exact
