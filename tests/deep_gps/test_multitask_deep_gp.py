"""Training a multitask deep GP (GPyTorch's "Deep GPs and DSPPs w/ Multitask" pattern), against GPyTorch."""

from __future__ import annotations

import gpytorch
import torch

import torchgp
from tests._tol import assert_close
from tests.deep_gps._models import DT, multitask_deep_gp, randomize

T = 3  # tasks


def _data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.linspace(-1, 1, n, dtype=DT).unsqueeze(-1)
    f = torch.stack([torch.sin(3 * X[:, 0]), torch.cos(3 * X[:, 0]), torch.sin(3 * X[:, 0]) + torch.cos(3 * X[:, 0])])
    return X, f.mT + 0.05 * torch.randn(n, T, generator=g, dtype=DT)


def _loss(lib, model, X, Y, seed):
    mll = lib.mlls.DeepApproximateMLL(lib.mlls.VariationalELBO(model.likelihood, model, num_data=X.shape[0]))
    torch.manual_seed(seed)
    return -mll(model(X), Y)


def test_step_zero_loss_and_gradients_match_gpytorch():
    X, Y = _data()
    model, ref = (
        multitask_deep_gp(torchgp, tasks=T, last_mean="linear"),
        multitask_deep_gp(gpytorch, tasks=T, last_mean="linear"),
    )
    randomize(model, 1)
    ref.load_state_dict(model.state_dict())
    for S in (1, 3):  # seeded draws between the layers: the same draws in both libraries
        with torchgp.settings.num_likelihood_samples(S), gpytorch.settings.num_likelihood_samples(S):
            model.zero_grad()
            ref.zero_grad()
            loss, loss_ref = _loss(torchgp, model, X, Y, seed=5), _loss(gpytorch, ref, X, Y, seed=5)
            assert_close(loss, loss_ref.detach())
            loss.backward()
            loss_ref.backward()
        grads_ref = dict(ref.named_parameters())
        for name, p in model.named_parameters():
            assert_close(p.grad, grads_ref[name].grad, loose=10)


def test_multitask_deep_gp_trains():
    X, Y = _data(n=20, seed=2)
    model = multitask_deep_gp(torchgp, tasks=T, last_mean="linear")
    ref = multitask_deep_gp(gpytorch, tasks=T, last_mean="linear")
    ref.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    with torchgp.settings.num_likelihood_samples(3):
        for step in range(40):
            opt.zero_grad()
            loss = _loss(torchgp, model, X, Y, seed=step)
            if step == 0:  # the first step's loss is GPyTorch's on the same model and draws
                with gpytorch.settings.num_likelihood_samples(3):
                    assert_close(loss, _loss(gpytorch, ref, X, Y, seed=0).detach())
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        model.eval()
        with torch.no_grad(), torchgp.settings.num_likelihood_samples(8):
            pred = model.likelihood(model(X))
    assert sum(losses[-5:]) < 0.6 * sum(losses[:5])
    assert pred.mean.shape == (8, 20, T)
    mean = pred.mean.mean(0)
    # the fit beats predicting each task's mean: the tasks' residual variance falls below their variance
    assert ((mean - Y) ** 2).mean() < 0.7 * Y.var(0).mean()
