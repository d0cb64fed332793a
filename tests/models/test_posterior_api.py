"""ExactGP.posterior(), prediction in blocks of test points, skipped variances, hooks, GPyTorch parity."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.models._gpytorch_ref import gpytorch_model
from tests.models._models import data, make_model
from torchgp import settings


def _test_x(t=9):
    return torch.linspace(-2.5, 2.5, t, dtype=torch.float64).unsqueeze(-1)


def test_posterior_equals_eval_call_in_either_mode():
    model, _, _ = make_model(n=20)
    Xs = _test_x()
    post_train = model.posterior(Xs)  # train mode: still the posterior, not the prior
    model.eval()
    with torch.no_grad():
        ref = model(Xs)
        post = model.posterior(Xs)
    assert isinstance(post, torchgp.distributions.MultivariateNormal)
    assert_close(post.mean, ref.mean)
    assert_close(post.covariance_matrix, ref.covariance_matrix)
    assert_close(post_train.mean.detach(), ref.mean)
    assert_close(post_train.variance.detach(), ref.variance)


def test_posterior_observation_noise():
    model, _, _ = make_model(n=20, noise=0.07)
    model.eval()
    Xs = _test_x()
    with torch.no_grad():
        latent = model.posterior(Xs)
        noisy = model.posterior(Xs, observation_noise=True)
        ref = model.likelihood(model(Xs), Xs)
        given = model.posterior(Xs, observation_noise=torch.full((9,), 0.3, dtype=torch.float64))
    assert_close(noisy.variance, ref.variance)
    assert_close(noisy.variance, latent.variance + 0.07)
    assert_close(given.covariance_matrix, latent.covariance_matrix + 0.3 * torch.eye(9, dtype=torch.float64))


def test_posterior_fixed_noise_observation_noise_kwarg():
    X, y = data(n=15)
    lik = torchgp.likelihoods.FixedNoiseGaussianLikelihood(noise=torch.full((15,), 0.02, dtype=torch.float64))
    from tests.models._models import ExactModel

    model = ExactModel(X, y, lik).double().eval()
    Xs = _test_x(4)
    var = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    with torch.no_grad():
        noisy = model.posterior(Xs, observation_noise=True, noise=var)
        latent = model.posterior(Xs)
    assert_close(noisy.variance, latent.variance + var)


@pytest.mark.parametrize("path", ["cholesky", "iterative"])
def test_blocks_of_one_test_point_equal_one_block(path):
    model, _, _ = make_model(n=40)
    model.eval()
    Xs = _test_x(13)
    rhs = torch.randn(13, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cap = 10 if path == "iterative" else 4096
    with torch.no_grad(), settings.max_cholesky_size(cap):
        whole = model(Xs)
        ref = (whole.mean, whole.variance, whole.covariance_matrix, whole.lazy_covariance_matrix.matmul(rhs))
        with settings.prediction_block_size(1):  # one test point per block
            part = model(Xs)
            got = (part.mean, part.variance, part.covariance_matrix, part.lazy_covariance_matrix.matmul(rhs))
    assert part.lazy_covariance_matrix.cross.kept is None  # really evaluated block by block
    loose = 1.0 if path == "cholesky" else 1e3
    for a, b in zip(got, ref):
        assert_close(a, b, loose=loose)
    assert_close(ref[3], ref[2] @ rhs, loose=loose)


def test_cross_covariance_never_held_whole():
    """With a block budget of 3 · n entries, no kernel evaluation sees more than 3 test rows × n."""
    model, _, _ = make_model(n=30)
    model.eval()
    rows_seen = []
    kernel = model.covar_module
    original = kernel.evaluate_block

    def spy(x1, x2, *args, **kwargs):
        rows_seen.append((x1.shape[-2], x2.shape[-2], kwargs.get("diag", False)))
        return original(x1, x2, *args, **kwargs)

    kernel.evaluate_block = spy
    Xs = _test_x(50)
    with torch.no_grad(), settings.prediction_block_size(3 * 30), settings.max_eager_kernel_size(1):
        pred = model(Xs)
        mean, var = pred.mean, pred.variance
    full = [(a, b) for a, b, diag in rows_seen if not diag and a * b > 30 * 30]
    assert not full, f"a kernel block larger than n × n was formed: {full}"
    cross = [a for a, b, diag in rows_seen if not diag and b == 30 and a != 30]
    assert cross and max(cross) <= 3
    kernel.evaluate_block = original
    with torch.no_grad():
        ref = model(Xs)
    assert_close(mean, ref.mean)
    assert_close(var, ref.variance)


def test_skip_posterior_variances_does_no_variance_work(monkeypatch):
    model, _, _ = make_model(n=20)
    model.eval()
    Xs = _test_x()
    with torch.no_grad():
        ref = model(Xs).mean
        model(Xs)  # the posterior cache exists

        def boom(*args, **kwargs):
            raise AssertionError("a variance solve ran under skip_posterior_variances")

        monkeypatch.setattr(torchgp.models.posterior.ExactPosterior, "half_solve", boom)
        with settings.skip_posterior_variances():
            pred = model(Xs)
        assert_close(pred.mean, ref)
        assert torch.all(pred.lazy_covariance_matrix.diagonal() == 0)


def test_predictions_equal_gpytorch():
    X, y = data(n=25)
    model, _, _ = make_model(n=25)
    model.eval()
    ref = gpytorch_model(X, y)
    Xs = _test_x(11)
    with torch.no_grad():
        ours, theirs = model(Xs), ref(Xs)
        ours_y, theirs_y = model.likelihood(ours), ref.likelihood(theirs)
    assert_close(ours.mean, theirs.mean)
    assert_close(ours.variance, theirs.variance)
    assert_close(ours.covariance_matrix, theirs.covariance_matrix)
    assert_close(ours_y.variance, theirs_y.variance)


def test_batched_test_inputs_in_blocks():
    model, _, _ = make_model(n=20)
    model.eval()
    Xt = torch.rand(3, 7, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 4 - 2
    with torch.no_grad():
        flat = model(Xt.reshape(21, 1))
        with settings.prediction_block_size(2 * 20):
            batched = model(Xt)
    assert batched.mean.shape == (3, 7)
    assert_close(batched.mean.reshape(-1), flat.mean)
    assert_close(batched.variance.reshape(-1), flat.variance)


# ---------------------------------------------------------------------------------------------- hooks
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_forward_hooks_fire(mode):
    model, X, _ = make_model(n=12)
    getattr(model, mode)()
    seen = []
    h1 = model.register_forward_pre_hook(lambda mod, args: seen.append(("pre", args[0].shape)))
    h2 = model.register_forward_hook(lambda mod, args, out: seen.append(("post", type(out).__name__, out.mean.shape)))
    x = X if mode == "train" else _test_x(5)
    with torch.no_grad():
        out = model(x)
    assert seen == [("pre", x.shape), ("post", type(out).__name__, out.mean.shape)]
    h1.remove()
    h2.remove()
    with torch.no_grad():
        model(x)
    assert len(seen) == 2


def test_hooks_can_replace_inputs_and_outputs():
    model, _, _ = make_model(n=12)
    model.eval()
    Xs = _test_x(5)
    with torch.no_grad():
        ref = model(Xs * 0.5)
        model.register_forward_pre_hook(lambda mod, args: (args[0] * 0.5,))
        got = model(Xs)
        assert_close(got.mean, ref.mean)  # the eval dispatch ran on the pre-hook's inputs
        model.register_forward_hook(lambda mod, args, out: out * 2.0)
        doubled = model(Xs)
    assert_close(doubled.mean, 2 * ref.mean)


def test_user_forward_still_returns_the_prior():
    model, X, _ = make_model(n=12)
    model.eval()
    Xs = _test_x(5)
    with torch.no_grad():
        prior = model.forward(Xs)
        with settings.prior_mode():
            ref = model(Xs)
    assert_close(prior.covariance_matrix, ref.covariance_matrix)


def test_no_global_warning_filter_installed():
    """Importing torchgp leaves the process's warning filters as they were."""
    import subprocess
    import sys

    # numpy, scipy and torch.jit add their own filters on import; none may come from torchgp
    code = (
        "import warnings; before = list(warnings.filters); import torchgp, torchgp.models.exact_gp\n"
        "from torchgp.errors import NumericalWarning\n"
        "new = [f for f in warnings.filters if f not in before]\n"
        "ours = [f for f in new if (f[3] is not None and 'torchgp' in f[3].pattern) or f[2] in (UserWarning, "
        "NumericalWarning) or f[2].__module__.startswith('torchgp')]\n"
        "assert not ours, ours"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def test_default_prediction_strategy_matches_the_model_and_gpytorch():
    from torchgp.models.exact_prediction_strategies import DefaultPredictionStrategy, prediction_strategy

    X, y = data(n=20)
    model, _, _ = make_model(n=20)
    model.eval()
    Xs = _test_x(6)
    with torch.no_grad():
        train_prior = model.forward(X)
        strat = prediction_strategy((X,), train_prior, y, model.likelihood)
        assert isinstance(strat, DefaultPredictionStrategy) and strat.num_train == 20
        joint = model.forward(torch.cat([X, Xs]))
        pred = strat.predict(joint)
        ref = model(Xs)
        K = joint.covariance_matrix
        mean, covar = strat.exact_prediction(joint.mean[20:], K[20:, 20:], K[20:, :20])
        gp = gpytorch_model(X, y)
        gp(Xs)
        theirs_cache = gp.prediction_strategy.mean_cache
    assert_close(pred.mean, ref.mean)
    assert_close(pred.variance, ref.variance)
    assert_close(mean, ref.mean)
    assert_close(covar.to_dense(), ref.covariance_matrix)
    assert_close(strat.exact_predictive_mean(joint.mean[20:], K[20:, :20]), ref.mean)
    assert_close(strat.mean_cache, theirs_cache)
    with pytest.raises(torchgp.errors.InputError, match="root"):
        DefaultPredictionStrategy((X,), train_prior, y, model.likelihood, root=torch.eye(20))
