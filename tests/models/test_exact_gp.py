"""ExactGP: prior in train mode, R&W Algorithm 2.1 posterior in eval mode, caching, batches."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

import torchgp
from tests._tol import assert_close
from tests.models._models import ExactModel, data, make_model, rbf_numpy


def _alg21(model, X, y, Xs):
    """R&W (2006) Algorithm 2.1 in NumPy: predictive mean and covariance of f*."""
    ell = model.covar_module.base_kernel.lengthscale.item()
    s = model.covar_module.outputscale.item()
    c = model.mean_module.constant.item()
    noise = model.likelihood.noise.item()
    X, y, Xs = X.numpy(), y.numpy(), Xs.numpy()
    K = rbf_numpy(X, X, ell, s) + noise * np.eye(len(X))
    Ks = rbf_numpy(Xs, X, ell, s)
    Kss = rbf_numpy(Xs, Xs, ell, s)
    L = np.linalg.cholesky(K)
    alpha = np.linalg.solve(L.T, np.linalg.solve(L, y - c))
    mean = c + Ks @ alpha
    v = np.linalg.solve(L, Ks.T)
    return mean, Kss - v.T @ v, noise


def test_posterior_equals_numpy_algorithm_2_1():
    model, X, y = make_model(n=15, d=2)
    Xs = torch.randn(8, 2, dtype=torch.float64)
    model.eval()
    pred = model(Xs)
    mean, cov, noise = _alg21(model, X, y, Xs)
    assert_close(pred.mean, mean)
    assert_close(pred.covariance_matrix, cov)
    assert_close(pred.variance, np.diag(cov))
    assert_close(pred.lazy_covariance_matrix.to_dense(), cov)
    obs = model.likelihood(pred)
    assert_close(obs.covariance_matrix, cov + noise * np.eye(8))
    assert_close(obs.variance, np.diag(cov) + noise)


def test_train_mode_returns_prior():
    model, X, y = make_model()
    model.train()
    prior = model(X)
    K = rbf_numpy(X.numpy(), X.numpy(), 0.7, 1.3)
    assert_close(prior.covariance_matrix, K)
    assert_close(prior.mean, torch.full_like(y, 0.2))


def test_eval_on_training_inputs_gives_posterior_not_prior():
    model, X, y = make_model(noise=1e-3)
    model.eval()
    post = model(X)
    mean, cov, _ = _alg21(model, X, y, X)
    assert_close(post.mean, mean)
    prior_var = model.covar_module.outputscale
    assert post.variance.max() < 0.01 * prior_var  # pinned down at the data
    assert not torch.allclose(post.mean, model.mean_module(X))


def test_log_likelihood_equals_scipy():
    model, X, y = make_model(n=10)
    model.train()
    K = rbf_numpy(X.numpy(), X.numpy(), 0.7, 1.3) + 0.05 * np.eye(10)
    expected = scipy.stats.multivariate_normal(np.full(10, 0.2), K).logpdf(y.numpy())
    assert_close(model.log_likelihood(model(X), y), expected)
    assert_close(model.log_likelihood(model(X)), expected)  # default target: the training targets


def test_column_targets_and_1d_inputs_accepted():
    X, y = data(n=10)
    lik = torchgp.likelihoods.GaussianLikelihood()
    ref = ExactModel(X, y, lik).double()
    lik2 = torchgp.likelihoods.GaussianLikelihood()
    m = ExactModel(X.squeeze(-1), y.unsqueeze(-1), lik2).double()
    assert m.train_inputs[0].shape == (10, 1) and m.train_targets.shape == (10,)
    assert_close(m.log_likelihood(m(X), y.unsqueeze(-1)), ref.log_likelihood(ref(X), y))
    ref.eval(), m.eval()
    xs = torch.linspace(-2, 2, 5, dtype=torch.float64)
    assert_close(m(xs).mean, ref(xs.unsqueeze(-1)).mean)


def test_set_train_data_and_strict():
    model, X, y = make_model(n=10)
    model.eval()
    before = model(X).mean
    X2, y2 = data(n=10, seed=3)
    model.set_train_data(X2, y2)
    assert model.train_inputs[0] is not X and torch.equal(model.train_inputs[0], X2)
    after = model(X).mean
    ref, _, _ = make_model(n=10)
    ref.set_train_data(X2, y2)
    ref.eval()
    assert not torch.allclose(before, after)
    assert_close(after, ref(X).mean)
    with pytest.raises(torchgp.errors.InputError, match="strict"):
        model.set_train_data(*data(n=7), strict=True)
    model.set_train_data(*data(n=7), strict=False)
    assert model(X).mean.shape == (10,)


def _reference_prediction(mutate, Xs):
    model, _, _ = make_model()
    mutate(model)
    model.eval()
    with torch.no_grad():
        return model(Xs).mean, model(Xs).variance


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.initialize(**{"covar_module.base_kernel.lengthscale": 0.3}),
        lambda m: m.covar_module.base_kernel.raw_lengthscale.data.fill_(1.5),
        lambda m: m.covar_module.raw_outputscale.data.mul_(2),
        lambda m: setattr(m.likelihood, "noise", 0.5),
        lambda m: m.mean_module.raw_constant.data.fill_(-1.0),
        lambda m: m.train_targets.add_(1.0),
        lambda m: m.train_targets.data.add_(1.0),
        lambda m: m.train_inputs[0].data.mul_(0.5),
        lambda m: m.set_train_data(m.train_inputs[0][:6], m.train_targets[:6], strict=False),
    ],
    ids=[
        "initialize",
        "data_fill",
        "data_mul",
        "noise_setter",
        "mean_fill",
        "targets_inplace",
        "targets_data",
        "inputs_data",
        "set_train_data",
    ],
)
def test_posterior_cache_never_stale(mutate):
    model, _, _ = make_model()
    model.eval()
    Xs = torch.linspace(-2, 2, 7, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad():
        before = model(Xs).mean
        mutate(model)
        after, after_var = model(Xs).mean, model(Xs).variance
    ref_mean, ref_var = _reference_prediction(mutate, Xs)
    assert not torch.allclose(before, after)
    assert_close(after, ref_mean)
    assert_close(after_var, ref_var)


def test_posterior_is_cached_between_calls():
    model, _, _ = make_model()
    model.eval()
    Xs = torch.randn(4, 1, dtype=torch.float64)
    with torch.no_grad():
        model(Xs)
        post = model._cache[-1]
        model(Xs * 2)
        assert model._cache[-1] is post


def test_batch_mode_equals_independent_models():
    b, n = 3, 9
    X, y = data(n=n, batch=(b,))
    batch = torch.Size([b])
    lik = torchgp.likelihoods.GaussianLikelihood(batch_shape=batch)
    model = ExactModel(X, y, lik, batch_shape=batch).double()
    noise = torch.tensor([[0.05], [0.1], [0.2]], dtype=torch.float64)
    ells = torch.tensor([[[0.5]], [[0.8]], [[1.2]]], dtype=torch.float64)
    model.initialize(**{"likelihood.noise": noise, "covar_module.base_kernel.lengthscale": ells})
    model.initialize(
        **{
            "covar_module.outputscale": torch.tensor([0.5, 1.0, 2.0]),
            "mean_module.constant": torch.tensor([0.0, 0.3, -0.2]),
        }
    )
    out = model(X)
    assert out.batch_shape == batch and out.event_shape == (n,)
    ll = model.likelihood.marginal(out).log_prob(y)
    Xs = torch.randn(5, 1, dtype=torch.float64)
    model.eval()
    pred = model(Xs)  # non-batched test inputs broadcast over the batch
    assert pred.mean.shape == (b, 5)
    for i in range(b):
        mi, _, _ = make_model(n=n)
        mi.set_train_data(X[i], y[i], strict=False)
        mi.initialize(
            **{
                "likelihood.noise": noise[i],
                "covar_module.base_kernel.lengthscale": ells[i],
                "covar_module.outputscale": model.covar_module.outputscale[i].item(),
                "mean_module.constant": model.mean_module.constant[i].item(),
            }
        )
        assert_close(ll[i], mi.likelihood.marginal(mi(X[i])).log_prob(y[i]))
        mi.eval()
        pi = mi(Xs)
        assert_close(pred.mean[i], pi.mean)
        assert_close(pred.covariance_matrix[i], pi.covariance_matrix)


def test_batch_training_trains_independent_gps():
    b, n = 2, 8
    X, y = data(n=n, batch=(b,))
    batch = torch.Size([b])
    lik = torchgp.likelihoods.GaussianLikelihood(batch_shape=batch)
    model = ExactModel(X, y, lik, batch_shape=batch).double()
    mll = torchgp.mlls.ExactMarginalLogLikelihood(lik, model)
    loss = -mll(model(X), y).sum()
    loss.backward()
    g = model.covar_module.base_kernel.raw_lengthscale.grad.clone()
    for i in range(b):
        li = torchgp.likelihoods.GaussianLikelihood()
        mi = ExactModel(X[i], y[i], li).double()
        (-torchgp.mlls.ExactMarginalLogLikelihood(li, mi)(mi(X[i]), y[i])).backward()
        assert_close(g[i], mi.covar_module.base_kernel.raw_lengthscale.grad)


def test_nan_test_row_does_not_spread():
    model, _, _ = make_model()
    model.eval()
    Xs = torch.linspace(-2, 2, 6, dtype=torch.float64).unsqueeze(-1)
    Xbad = Xs.clone()
    Xbad[2] = float("nan")
    with torch.no_grad():
        good, bad = model(Xs), model(Xbad)
        obs = model.likelihood(bad)
    keep = torch.tensor([0, 1, 3, 4, 5])
    assert torch.isnan(bad.mean[2])
    assert_close(bad.mean[keep], good.mean[keep])
    assert_close(bad.variance[keep], good.variance[keep])
    assert_close(obs.variance[keep], good.variance[keep] + model.likelihood.noise)
    assert_close(bad.covariance_matrix[keep][:, keep], good.covariance_matrix[keep][:, keep])


def test_nan_test_row_does_not_spread_on_the_gram_path(monkeypatch):
    from torchgp.kernels import distance

    monkeypatch.setattr(distance, "_DIRECT_LIMIT", 0)  # force ‖a‖² - 2aᵀb + ‖b‖²
    test_nan_test_row_does_not_spread()


def test_prior_mode_in_eval():
    model, X, _ = make_model()
    model.eval()
    Xs = torch.randn(4, 1, dtype=torch.float64)
    with torchgp.settings.prior_mode():
        prior = model(Xs)
    assert_close(prior.covariance_matrix, rbf_numpy(Xs.numpy(), Xs.numpy(), 0.7, 1.3))


def test_double_moves_training_data():
    X, y = data(n=6, dtype=torch.float32)
    model = ExactModel(X, y, torchgp.likelihoods.GaussianLikelihood())
    model.double()
    assert model.train_inputs[0].dtype == torch.float64 and model.train_targets.dtype == torch.float64
    model.eval()
    assert model(torch.randn(3, 1, dtype=torch.float64)).mean.dtype == torch.float64


def test_float32_duplicates_recover_with_warning():
    X = torch.cat([torch.linspace(0, 1, 20)] * 3).unsqueeze(-1)
    y = torch.sin(6 * X).squeeze(-1)
    lik = torchgp.likelihoods.GaussianLikelihood(noise_constraint=torchgp.constraints.GreaterThan(1e-9))
    model = ExactModel(X, y, lik)
    model.initialize(**{"likelihood.noise": 1e-8, "covar_module.base_kernel.lengthscale": 2.0})
    with pytest.warns(torchgp.errors.NumericalWarning, match="jitter"):
        ll = model.log_likelihood(model(X), y)
    assert torch.isfinite(ll)


def test_fantasy_model_equals_refit_on_all_data():
    model, X, y = make_model(n=10)
    model.eval()
    Xn, yn = data(n=3, seed=7)
    fant = model.get_fantasy_model(Xn, yn)
    ref, _, _ = make_model(n=10)
    ref.set_train_data(torch.cat([X, Xn]), torch.cat([y, yn]), strict=False)
    ref.eval()
    Xs = torch.randn(4, 1, dtype=torch.float64)
    assert_close(fant(Xs).mean, ref(Xs).mean)
    assert model.train_inputs[0].shape == (10, 1)


def test_gradients_flow_through_predictions_without_detached_caches():
    model, _, _ = make_model()
    model.eval()
    Xs = torch.randn(3, 1, dtype=torch.float64)
    with torchgp.settings.detach_test_caches(False):
        model(Xs).mean.sum().backward()
    assert model.covar_module.base_kernel.raw_lengthscale.grad is not None


def test_batched_test_inputs_share_one_posterior_and_match_flat_predictions():
    import torchgp

    torch.manual_seed(0)
    X = torch.rand(30, 2, dtype=torch.float64)
    y = torch.sin(X.sum(-1))

    class Model(torchgp.models.ExactGP):
        def __init__(self, X, y, lik):
            super().__init__(X, y, lik)
            self.mean_module = torchgp.means.ConstantMean()
            self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel())

        def forward(self, x):
            return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    model = Model(X, y, torchgp.likelihoods.GaussianLikelihood()).double().eval()
    Xt = torch.rand(5, 3, 2, dtype=torch.float64)
    with torch.no_grad():
        batched = model(Xt)
        flat = model(Xt.reshape(15, 2))
        other = model(torch.rand(7, 1, 2, dtype=torch.float64))  # a different batch shape after the first
    assert batched.mean.shape == (5, 3) and other.mean.shape == (7, 1)
    torch.testing.assert_close(batched.mean.reshape(-1), flat.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(batched.variance.reshape(-1), flat.variance, rtol=1e-10, atol=1e-12)
    # the training covariance was factorised once, with the training batch shape
    assert model._cache[2].L.shape == (30, 30)


def test_iterative_path_training_and_predictions_match_cholesky():
    """Above settings.max_cholesky_size the model trains and predicts through CG/SLQ; results agree."""
    import torchgp
    from torchgp import settings

    torch.manual_seed(1)
    X = torch.rand(400, 2, dtype=torch.float64)
    y = torch.sin(4 * X[:, 0]) * torch.cos(3 * X[:, 1]) + 0.1 * torch.randn(400, dtype=torch.float64)
    Xs = torch.rand(25, 2, dtype=torch.float64)

    class Model(torchgp.models.ExactGP):
        def __init__(self, X, y, lik):
            super().__init__(X, y, lik)
            self.mean_module = torchgp.means.ConstantMean()
            self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(ard_num_dims=2))

        def forward(self, x):
            return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    lik = torchgp.likelihoods.GaussianLikelihood()
    model = Model(X, y, lik).double()
    model.initialize(**{"covar_module.base_kernel.lengthscale": 0.3, "likelihood.noise": 0.05})
    mll = torchgp.mlls.ExactMarginalLogLikelihood(lik, model)

    def loss_and_grads():
        model.zero_grad()
        loss = -mll(model(X), y)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    exact_loss, exact_grad = loss_and_grads()
    with settings.max_cholesky_size(100):
        it_loss, it_grad = loss_and_grads()
    assert abs((it_loss - exact_loss) / exact_loss) < 1e-3
    assert torch.all((it_grad - exact_grad).abs() <= 1e-2 * exact_grad.abs() + 1e-4)

    model.eval()
    with torch.no_grad():
        exact = lik(model(Xs))
        with settings.max_cholesky_size(100):
            model._cache = None
            it = lik(model(Xs))
            assert not model._cache[2].use_cholesky
            it_mean, it_var = it.mean, it.variance
    torch.testing.assert_close(it_mean, exact.mean, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(it_var, exact.variance, rtol=1e-3, atol=1e-4)
