"""``reuse_constrained_values``: one transform per hyperparameter per evaluation, never a stale value."""

from __future__ import annotations

import torch

import torchgp
from torchgp.module import reuse_constrained_values
from torchgp.priors import GammaPrior


def _mll(priors: bool):
    g = torch.Generator().manual_seed(0)
    X = torch.rand(12, 2, generator=g, dtype=torch.float64)
    y = torch.sin(5 * X[:, 0]) + 0.1 * torch.randn(12, generator=g, dtype=torch.float64)

    class GP(torchgp.models.ExactGP):
        def __init__(self, lik):
            super().__init__(X, y, lik)
            self.mean_module = torchgp.means.ConstantMean()
            base = torchgp.kernels.MaternKernel(
                nu=2.5, ard_num_dims=2, lengthscale_prior=GammaPrior(3.0, 6.0) if priors else None
            )
            self.covar_module = torchgp.kernels.ScaleKernel(
                base, outputscale_prior=GammaPrior(2.0, 0.15) if priors else None
            )

        def forward(self, x):
            return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    lik = torchgp.likelihoods.GaussianLikelihood()
    return torchgp.mlls.ExactMarginalLogLikelihood(lik, GP(lik).double())


def _loss_and_grads(mll):
    for p in mll.parameters():
        p.grad = None
    m = mll.model
    loss = -mll(m(*m.train_inputs), m.train_targets)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in mll.parameters()]


def _nodes(t):
    seen, stack = set(), [t.grad_fn]
    while stack:
        f = stack.pop()
        if f is not None and f not in seen:
            seen.add(f)
            stack.extend(n for n, _ in f.next_functions)
    return len(seen)


def test_same_loss_and_gradients_with_one_transform_per_value():
    mll = _mll(priors=True)
    ref_loss, ref_grads = _loss_and_grads(mll)
    with reuse_constrained_values():
        loss, grads = _loss_and_grads(mll)
    assert torch.equal(loss, ref_loss)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-13, atol=1e-15)
    m = mll.model
    plain = _nodes(-mll(m(*m.train_inputs), m.train_targets))
    with reuse_constrained_values():
        reused = _nodes(-mll(m(*m.train_inputs), m.train_targets))
    assert reused == plain - 2  # the two priors' lengthscale and outputscale: no second softplus each (Positive())


def test_a_changed_parameter_constraint_or_grad_mode_is_recomputed():
    kernel = _mll(priors=False).model.covar_module.base_kernel
    with reuse_constrained_values():
        first = kernel.lengthscale
        assert kernel.lengthscale is first  # unchanged: reused
        with torch.no_grad():
            kernel.raw_lengthscale.add_(1.0)  # in place: a new version
        second = kernel.lengthscale
        assert second is not first and not torch.equal(second, first)
        with torch.no_grad():
            third = kernel.lengthscale
        assert third is not second and not third.requires_grad
        kernel.register_constraint("raw_lengthscale", torchgp.constraints.GreaterThan(0.5))
        fourth = kernel.lengthscale
        assert fourth is not second and bool((fourth > 0.5).all())
        kernel.raw_lengthscale = torch.nn.Parameter(torch.zeros(1, 2, dtype=torch.float64))  # a new parameter
        assert torch.allclose(kernel.lengthscale, 0.5 + torch.nn.functional.softplus(torch.zeros(1, 2)).double())
    # outside the context nothing is kept
    assert kernel.lengthscale is not kernel.lengthscale


def test_fit_reaches_the_same_optimum_as_the_plain_objective():
    from scipy.optimize import minimize

    from torchgp.optim._run import _full_loss_of, _ParamVector

    a, b = _mll(priors=True), _mll(priors=True)
    r = torchgp.fit(a, progress=False)
    params = [p for p in b.parameters() if p.requires_grad]
    vec = _ParamVector(params)

    def objective(x):  # the same L-BFGS-B on the objective evaluated without the context
        vec.set(x)
        vec.zero_grad()
        loss = _full_loss_of(b, b.model, None)
        loss.backward()
        return float(loss), vec.grad()

    res = minimize(objective, vec.get(), jac=True, method="L-BFGS-B", options={"ftol": 1e-9, "gtol": 1e-5})
    assert abs(r.loss - res.fun) < 1e-9
