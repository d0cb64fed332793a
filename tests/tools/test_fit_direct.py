"""``fit``'s direct evaluation of a standard exact GP: the full path's loss and gradients, and where it must not apply."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests.tools._batched_models import batched_mll
from torchgp.optim import _direct
from torchgp.optim._direct import DirectExact, FitLoss
from torchgp.optim._run import _full_loss

N, D = 12, 3


def _data(batch=(), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(*batch, N, D, generator=g, dtype=torch.float64)
    y = torch.sin(4 * X[..., 0]) + X[..., 1] ** 2 + 0.1 * torch.randn(*batch, N, generator=g, dtype=torch.float64)
    return X.to(dtype), y.to(dtype)


def _mll(X, y, kernel=None, mean=None, likelihood=None, forward=None, batch_shape=torch.Size()):
    kernel = kernel or torchgp.kernels.ScaleKernel(
        torchgp.kernels.MaternKernel(nu=2.5, ard_num_dims=D, batch_shape=batch_shape), batch_shape=batch_shape
    )
    mean = mean or torchgp.means.ConstantMean(batch_shape=batch_shape)
    lik = likelihood or torchgp.likelihoods.GaussianLikelihood(batch_shape=batch_shape)

    class GP(torchgp.models.ExactGP):
        def __init__(self):
            super().__init__(X, y, lik)
            self.mean_module, self.covar_module = mean, kernel

        def forward(self, x):
            if forward is not None:
                return forward(self, x)
            return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    model = GP().to(X.dtype)
    return torchgp.mlls.ExactMarginalLogLikelihood(lik, model)


def _perturb(mll, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mll.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))


def _loss_and_grads(loss_fn, mll):
    params = [p for p in mll.parameters() if p.requires_grad]
    loss = loss_fn()
    grads = torch.autograd.grad(loss.sum(), params, allow_unused=True)
    return loss.detach(), [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


KERNELS = {
    "scale_matern_ard": lambda: torchgp.kernels.ScaleKernel(torchgp.kernels.MaternKernel(nu=2.5, ard_num_dims=D)),
    "rbf": lambda: torchgp.kernels.RBFKernel(),
    "scale_rq": lambda: torchgp.kernels.ScaleKernel(torchgp.kernels.RQKernel(ard_num_dims=D)),
    "sum_rbf_periodic_linear": lambda: (
        torchgp.kernels.ScaleKernel(
            torchgp.kernels.RBFKernel(active_dims=[0, 1]) * torchgp.kernels.PeriodicKernel(active_dims=[2])
        )
        + torchgp.kernels.LinearKernel()
    ),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_direct_loss_and_gradients_equal_the_full_path(name, dtype):
    X, y = _data(dtype=dtype)
    mll = _mll(X, y, kernel=KERNELS[name]())
    _perturb(mll)
    mll.train()
    model = mll.model
    direct = DirectExact.build(mll, model)
    assert direct is not None
    with torch.no_grad():
        assert direct.matches(model(X), model.mean_module(X))
    full, g_full = _loss_and_grads(lambda: _full_loss(mll, model, None), mll)
    with torchgp.module.reuse_constrained_values():
        ours, g_ours = _loss_and_grads(lambda: -direct.values(), mll)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(ours, full, rtol=rtol, atol=0)
    for a, b in zip(g_ours, g_full):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))


@pytest.mark.parametrize(
    "likelihood",
    [
        lambda y: torchgp.likelihoods.FixedNoiseGaussianLikelihood(noise=0.01 + 0.02 * torch.rand(N, dtype=y.dtype)),
        lambda y: torchgp.likelihoods.FixedNoiseGaussianLikelihood(
            noise=torch.full((N,), 0.01, dtype=y.dtype), learn_additional_noise=True
        ),
    ],
)
def test_fixed_noise_and_zero_mean_take_the_direct_path_with_the_same_loss(likelihood):
    X, y = _data()
    mll = _mll(X, y, mean=torchgp.means.ZeroMean(), likelihood=likelihood(y))
    _perturb(mll)
    loss = FitLoss(mll, mll.model, lambda: _full_loss(mll, mll.model, None), True, list(mll.parameters()))
    first = loss()
    assert loss.used
    torch.testing.assert_close(loss(), first, rtol=1e-12, atol=0)


def test_a_batch_of_models_gives_each_members_loss():
    X, y = _data(batch=(3,))
    mll = batched_mll(X, y, torch.Size([3]))
    _perturb(mll)
    mll.train()
    full = lambda: -mll(mll.model(X), y)  # noqa: E731
    loss = FitLoss(mll, mll.model, full, False, list(mll.parameters()))
    first = loss()
    assert first.shape == (3,) and loss.used
    (a, ga), (b, gb) = _loss_and_grads(loss, mll), _loss_and_grads(full, mll)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-14)


def _fit_both(make, monkeypatch, **kwargs):
    """The fitted parameters and result with the direct path, then with it disabled (the full path throughout)."""
    calls = []
    real = _direct.DirectExact._values
    monkeypatch.setattr(_direct.DirectExact, "_values", lambda self: calls.append(1) or real(self))
    mll = make()
    res = torchgp.fit(mll, progress=False, **kwargs)
    assert len(calls) >= res.function_evals - 1  # every evaluation after the first took the direct path
    ours = {k: v.detach().clone() for k, v in mll.named_parameters()}
    monkeypatch.setattr(_direct.DirectExact, "build", classmethod(lambda cls, mll, model: None))
    mll = make()
    ref = torchgp.fit(mll, progress=False, **kwargs)
    theirs = {k: v.detach().clone() for k, v in mll.named_parameters()}
    return res, ref, ours, theirs


def test_fit_reaches_the_full_paths_optimum_in_the_same_iterations(monkeypatch):
    X, y = _data(seed=3)
    res, ref, ours, theirs = _fit_both(lambda: _mll(X, y), monkeypatch)
    assert (res.iterations, res.function_evals) == (ref.iterations, ref.function_evals)
    assert abs(res.loss - ref.loss) <= 1e-12
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-8, atol=1e-10)


def test_batched_fit_equals_the_full_path(monkeypatch):
    X, y = _data(batch=(3,), seed=4)
    res, ref, ours, theirs = _fit_both(lambda: batched_mll(X, y, torch.Size([3])), monkeypatch)
    assert abs(res.loss - ref.loss) <= 1e-10
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-7, atol=1e-9)


def _double_mean(self, x):
    return torchgp.distributions.MultivariateNormal(2 * self.mean_module(x), self.covar_module(x))


def _extra_kernel(self, x):
    return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x) + self.covar_module(x))


def _warped_inputs(self, x):
    z = x**2
    return torchgp.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))


@pytest.mark.parametrize("forward", [_double_mean, _extra_kernel, _warped_inputs], ids=lambda f: f.__name__)
def test_a_forward_that_is_not_the_standard_one_keeps_the_full_path(forward, monkeypatch):
    X, y = _data()
    mll = _mll(X, y, forward=forward)
    with torch.no_grad():
        mll.model.mean_module.constant.fill_(0.5)  # a zero constant would hide the doubled mean
    loss = FitLoss(mll, mll.model, lambda: _full_loss(mll, mll.model, None), True, list(mll.parameters()))
    loss()
    assert not loss.used
    calls = []
    monkeypatch.setattr(DirectExact, "values", lambda self: calls.append(1))
    torchgp.fit(mll, progress=False, maxiter=3)
    assert not calls


def test_priors_hooks_added_terms_and_large_n_are_not_taken(monkeypatch):
    X, y = _data()
    mll = _mll(X, y)
    assert DirectExact.build(mll, mll.model) is not None
    mll.model.covar_module.register_prior("os_prior", torchgp.priors.GammaPrior(2.0, 1.0), "outputscale")
    assert DirectExact.build(mll, mll.model) is None

    mll = _mll(X, y)
    handle = mll.model.covar_module.register_forward_hook(lambda *a: None)
    assert DirectExact.build(mll, mll.model) is None
    handle.remove()
    assert DirectExact.build(mll, mll.model) is not None

    with torchgp.settings.max_cholesky_size(N - 1):
        assert DirectExact.build(mll, mll.model) is None
    with torchgp.settings.skip_logdet_forward(True):
        assert DirectExact.build(mll, mll.model) is None
    with torchgp.settings.observation_nan_policy("mask"):
        assert DirectExact.build(mll, mll.model) is None


def test_a_failed_trial_point_is_backtracked_on_the_direct_path(monkeypatch):
    X, y = _data(seed=5)

    def make():
        return _mll(X, y)

    failures = []
    real = _direct.CholeskyGaussianLogProb.apply

    def failing(K, *args):  # the direct path's factorisation fails at the 5th and 6th evaluations
        failures.append(len(failures))
        if len(failures) in (5, 6):
            raise torchgp.errors.NotPSDError("singular at this trial point")
        return real(K, *args)

    monkeypatch.setattr(_direct.CholeskyGaussianLogProb, "apply", failing)
    mll = make()
    res = torchgp.fit(mll, progress=False)
    assert len(failures) > 6 and any("singular at this trial point" in w for w in res.warnings)
    monkeypatch.setattr(_direct.CholeskyGaussianLogProb, "apply", real)
    ref = torchgp.fit(make(), progress=False)
    assert abs(res.loss - ref.loss) <= 1e-7 * abs(ref.loss)  # the same optimum by another line search


def test_adam_fit_equals_the_full_path(monkeypatch):
    X, y = _data(seed=6)
    res, ref, ours, theirs = _fit_both(lambda: _mll(X, y), monkeypatch, optimizer="adam", lr=0.05, maxiter=30)
    assert res.function_evals == ref.function_evals == 30
    assert abs(res.loss - ref.loss) <= 1e-12 * max(1.0, abs(ref.loss))
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-10, atol=1e-12)


def test_predictions_made_before_a_direct_fit_do_not_go_stale():
    X, y = _data(seed=3)
    mll = _mll(X, y)
    model = mll.model
    Xt = torch.rand(5, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        before = model(Xt).mean  # builds the prediction cache at the starting parameters
    torchgp.fit(mll, progress=False)
    fresh = _mll(X, y)
    fresh.load_state_dict(mll.state_dict())
    model.eval(), fresh.model.eval()
    with torch.no_grad():
        after, ref = model(Xt).mean, fresh.model(Xt).mean
    assert not torch.allclose(before, ref, atol=1e-3)
    torch.testing.assert_close(after, ref, rtol=1e-12, atol=1e-12)
