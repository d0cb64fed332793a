"""``MultivariateNormal.__getitem__`` follows GPyTorch's rule: batch indices select GPs, point indices points."""

from __future__ import annotations

import pytest
import torch

import torchgp

gpytorch = pytest.importorskip("gpytorch")

INDICES = [
    0,
    (1,),
    (slice(None), slice(1, 4)),
    (Ellipsis, slice(0, 5, 2)),
    (Ellipsis, 3),
    (1, torch.tensor([4, 0, 2])),
    (Ellipsis, torch.tensor([1, 3])),
    (slice(0, 1), Ellipsis),
]


def _pair():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(2, 5, 5, generator=g, dtype=torch.float64)
    S = A @ A.mT + torch.eye(5, dtype=torch.float64)
    mu = torch.randn(2, 5, generator=g, dtype=torch.float64)
    return torchgp.distributions.MultivariateNormal(mu, S), gpytorch.distributions.MultivariateNormal(mu, S)


@pytest.mark.parametrize("idx", INDICES, ids=str)
def test_indexing_equals_gpytorch(idx):
    ours, ref = _pair()
    a, b = ours[idx], ref[idx]
    torch.testing.assert_close(a.mean, b.mean, rtol=0, atol=0)
    torch.testing.assert_close(a.covariance_matrix, b.covariance_matrix, rtol=1e-14, atol=1e-14)


def test_indexed_points_keep_their_joint_covariance():
    ours, _ = _pair()
    sub = ours[..., 1:4]
    torch.testing.assert_close(sub.covariance_matrix, ours.covariance_matrix[:, 1:4, 1:4])
    y = torch.zeros(2, 3, dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(ours.mean[:, 1:4], ours.covariance_matrix[:, 1:4, 1:4])
    torch.testing.assert_close(sub.log_prob(y), ref.log_prob(y))


def test_bad_indices_say_what_is_wrong():
    ours, _ = _pair()
    with pytest.raises(IndexError, match="too many dimensions"):
        ours[0, 1, 2]
    with pytest.raises(IndexError, match="one-point"):
        ours[0, 2]  # GPyTorch returns a MultivariateNormal with no event dimension here
    with pytest.raises(IndexError, match="more than one Ellipsis"):
        ours[..., 0, ...]
