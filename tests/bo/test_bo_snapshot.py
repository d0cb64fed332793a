"""The closed-form posterior snapshot of torchgp.bo against the model's own posterior, and its scope."""

import pytest
import torch

import torchgp
from tests.bo.conftest import ExactModel
from torchgp import bo
from torchgp.bo.snapshot import PosteriorSnapshot, _MarginalMoments, active_snapshot, frozen_posterior
from torchgp.distributions import MultivariateNormal


def _data(n=15, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=torch.float64)
    y = torch.sin(5 * X[:, 0]) + X[:, 1] ** 2 - X[:, -1]
    return X, (y - y.mean()) / y.std()


def _bo_model(X, y, lengthscale=(0.3, 0.5, 0.7), outputscale=1.3, noise=1e-3, constant=0.2):
    model = bo.BOModel(X, y).double()
    model.covar_module.base_kernel.lengthscale = torch.tensor(lengthscale[: X.shape[-1]], dtype=torch.float64)
    model.covar_module.outputscale = outputscale
    model.likelihood.noise = noise
    model.mean_module.constant = constant
    return model.eval()


class _Kernelled(torchgp.models.ExactGP):
    """An exact GP with a given mean and kernel and the plain forward."""

    def __init__(self, X, y, mean, kernel):
        super().__init__(X, y, torchgp.likelihoods.GaussianLikelihood())
        self.mean_module, self.covar_module = mean, kernel

    def forward(self, x):
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))


class _Shifted(_Kernelled):
    """A forward the snapshot cannot see: the prior mean has an extra term outside ``mean_module``."""

    def forward(self, x):
        return MultivariateNormal(self.mean_module(x) + x[..., 0], self.covar_module(x))


def _models():
    X, y = _data()
    k = torchgp.kernels
    rq = k.RQKernel(ard_num_dims=3)
    rq.lengthscale, rq.alpha = torch.tensor([0.4, 0.6, 0.5]), 0.7
    m32 = k.MaternKernel(nu=1.5)
    m32.lengthscale = 0.45
    return {
        "bo_matern52": _bo_model(X, y),
        "rbf_ard": ExactModel(X, y).double().eval(),
        "rq_zero_mean": _Kernelled(X, y, torchgp.means.ZeroMean(), k.ScaleKernel(rq)).double().eval(),
        "matern32_unscaled": _Kernelled(X, y, torchgp.means.ConstantMean(), m32).double().eval(),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_snapshot_equals_the_models_posterior(name, tol):
    model = _models()[name]
    snap = PosteriorSnapshot.of(model)
    assert snap is not None
    Xs = torch.rand(7, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    Xs[0] = model.train_inputs[0][2]  # at a training input: the variance nearly vanishes there
    with torch.no_grad():
        post = model(Xs)
        noisy = model.likelihood(post, Xs)
        mean, var = snap.moments(Xs)
        _, noisy_var = snap.moments(Xs, observation_noise=True)
        joint = model(Xs[:3])
        jmean, jcov = snap.moments(Xs[:3].unsqueeze(0), joint=True)
        _, jcov_noisy = snap.moments(Xs[:3].unsqueeze(0), observation_noise=True, joint=True)
    t = tol(torch.float64)
    torch.testing.assert_close(mean, post.mean, **t)
    torch.testing.assert_close(var, post.variance, **t)
    torch.testing.assert_close(noisy_var, noisy.variance, **t)
    torch.testing.assert_close(jmean[0], joint.mean, **t)
    torch.testing.assert_close(jcov[0], joint.covariance_matrix, **t)
    noisy_joint = model.likelihood(joint, Xs[:3]).covariance_matrix
    torch.testing.assert_close(jcov_noisy[0], noisy_joint, **t)


@pytest.mark.parametrize("name", list(_models()))
def test_closed_form_gradient_gradcheck_and_autograd(name):
    model = _models()[name]
    snap = PosteriorSnapshot.of(model)
    Z = torch.rand(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    for noise in (torch.zeros((), dtype=torch.float64), snap.noise):
        assert torch.autograd.gradcheck(lambda z, s=noise: _MarginalMoments.apply(z, snap, s), (Z,))
    # against autograd through the model's own posterior
    w = torch.randn(2, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mean, var = snap.moments(Z.unsqueeze(-2))
    (g_snap,) = torch.autograd.grad((w[0] * mean.squeeze(-1) + w[1] * var.squeeze(-1)).sum(), Z)
    post = model(Z)
    (g_model,) = torch.autograd.grad((w[0] * post.mean + w[1] * post.variance).sum(), Z)
    torch.testing.assert_close(g_snap, g_model, rtol=1e-9, atol=1e-11)


def test_acquisition_values_and_gradients_inside_frozen_posterior(tol):
    model = _bo_model(*_data())
    X = torch.rand(6, 1, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for acqf in (
        bo.LogExpectedImprovement(model, best_f=-1.0, maximize=False),
        bo.UpperConfidenceBound(model, beta=2.0, likelihood=model.likelihood),
        bo.qLogExpectedImprovement(model, best_f=0.5, num_samples=64),
    ):
        shaped = X if not isinstance(acqf, bo.MCAcquisitionFunction) else X.reshape(2, 3, 3)
        Z1, Z2 = shaped.clone().requires_grad_(True), shaped.clone().requires_grad_(True)
        with frozen_posterior(model) as snap:
            assert snap is not None and active_snapshot(model) is snap
            v1 = acqf(Z1)
            (g1,) = torch.autograd.grad(v1.sum(), Z1)
        assert active_snapshot(model) is None
        v2 = acqf(Z2)
        (g2,) = torch.autograd.grad(v2.sum(), Z2)
        torch.testing.assert_close(v1, v2, **tol(torch.float64))
        torch.testing.assert_close(g1, g2, rtol=1e-8, atol=1e-10 * g2.abs().max().item())


def test_models_it_does_not_cover_keep_their_own_path():
    X, y = _data()
    shifted = _Shifted(X, y, torchgp.means.ConstantMean(), torchgp.kernels.RBFKernel()).double().eval()
    periodic = _Kernelled(X, y, torchgp.means.ConstantMean(), torchgp.kernels.PeriodicKernel()).double().eval()
    on_columns = _Kernelled(X, y, torchgp.means.ConstantMean(), torchgp.kernels.RBFKernel(active_dims=[0, 2])).double()
    on_columns.eval()
    training = _bo_model(X, y).train()
    for model in (shifted, periodic, on_columns, training):
        assert PosteriorSnapshot.of(model) is None
        with frozen_posterior(model) as snap:
            assert snap is None and active_snapshot(model) is None
    with torchgp.settings.fast_pred_var():
        assert PosteriorSnapshot.of(_bo_model(X, y)) is None
    # a likelihood other than the model's own goes through the model, inside the block too
    model = _bo_model(X, y)
    other = torchgp.likelihoods.GaussianLikelihood().double()
    other.noise = 0.5
    acqf = bo.UpperConfidenceBound(model, beta=1.0, likelihood=other)
    x = torch.rand(3, 1, 3, dtype=torch.float64)
    with torch.no_grad():
        outside = acqf(x)
        with frozen_posterior(model):
            inside = acqf(x)
    torch.testing.assert_close(inside, outside)


def test_optimize_acqf_sees_new_data_between_calls():
    X, y = _data(n=12, d=2)
    model = _bo_model(X, y, lengthscale=(0.3, 0.4))
    opts = {"seed": 7}
    acqf = bo.LogExpectedImprovement(model, best_f=y.min(), maximize=False)
    x_first, _ = bo.optimize_acqf(acqf, torch.tensor([[0.0, 0.0], [1.0, 1.0]]).double(), options=opts)
    # the data change (the minimiser found is observed, much lower than anything seen): the next call must see it
    X2 = torch.cat([X, x_first.reshape(1, 2)])
    y2 = torch.cat([y, torch.tensor([y.min() - 2.0], dtype=torch.float64)])
    model.set_train_data(X2, y2, strict=False)
    acqf2 = bo.LogExpectedImprovement(model, best_f=y2.min(), maximize=False)
    bounds = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).double()
    x_frozen, v_frozen = bo.optimize_acqf(acqf2, bounds, options=opts)
    x_plain, v_plain = bo.optimize_acqf(acqf2, bounds, options={**opts, "frozen_posterior": False})
    torch.testing.assert_close(x_frozen, x_plain, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(v_frozen, v_plain, rtol=1e-8, atol=1e-8)
    assert not torch.allclose(x_frozen, x_first, atol=1e-3)  # a fresh snapshot: not the old maximiser again
    with torch.no_grad():  # and its value is the acquisition on the new model, called directly
        torch.testing.assert_close(acqf2(x_frozen.unsqueeze(0)).squeeze(), v_frozen)


def test_second_derivatives_through_the_closed_form_node_raise():
    model = _bo_model(*_data())
    snap = PosteriorSnapshot.of(model)
    Z = torch.rand(2, 1, 3, dtype=torch.float64, requires_grad=True)
    _, var = snap.moments(Z)
    (g,) = torch.autograd.grad(var.sum(), Z, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g.sum(), Z)
