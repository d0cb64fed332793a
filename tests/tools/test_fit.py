import math

import pytest
import torch

import torchgp
from torchgp.errors import InputError, NotPSDError
from torchgp.io import ExactGPModel
from torchgp.optim.fit import FitResult, fit


class FoundingGP(torchgp.models.ExactGP):
    def __init__(self, x, y, likelihood):
        super().__init__(x, y, likelihood)
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel())

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def founding_mll():
    torch.manual_seed(0)
    x = torch.randn(100, 1, dtype=torch.float64)
    y = torch.sin(x[:, 0]) + 0.2 * torch.randn(100, dtype=torch.float64)
    likelihood = torchgp.likelihoods.GaussianLikelihood().double()
    model = FoundingGP(x, y, likelihood).double()
    return torchgp.mlls.ExactMarginalLogLikelihood(likelihood, model)


def loss_of(mll):
    mll.model.train()
    with torch.no_grad():
        return float(-mll(mll.model(*mll.model.train_inputs), mll.model.train_targets))


def test_lbfgs_beats_200_adam_steps_with_fewer_evaluations():
    mll_lbfgs, mll_adam = founding_mll(), founding_mll()
    r_lbfgs = fit(mll_lbfgs, progress=False)
    r_adam = fit(mll_adam, "adam", lr=0.1, maxiter=200, ftol=0.0, gtol=0.0, progress=False)
    assert r_adam.function_evals == 200 and r_adam.iterations == 200
    assert r_lbfgs.loss <= r_adam.loss + 1e-6
    assert loss_of(mll_lbfgs) == pytest.approx(r_lbfgs.loss, abs=1e-12)  # the model holds the reported optimum
    assert r_lbfgs.function_evals < r_adam.function_evals
    assert r_lbfgs.success and r_lbfgs.history and r_lbfgs.time > 0
    assert isinstance(r_lbfgs, FitResult) and "L-BFGS-B" in str(r_lbfgs)


def test_restarts_keep_the_best_and_are_seeded():
    a, b = founding_mll(), founding_mll()
    ra = fit(a, restarts=2, seed=3, progress=False)
    rb = fit(b, restarts=2, seed=3, progress=False)
    assert len(ra.restart_losses) == 3
    assert ra.loss == pytest.approx(min(ra.restart_losses))
    assert ra.restart_losses == pytest.approx(rb.restart_losses)
    assert loss_of(a) == pytest.approx(ra.loss, abs=1e-12)


def test_patience_and_maxiter_stop_rules():
    r = fit(founding_mll(), "adam", lr=0.1, maxiter=7, progress=False)
    assert r.stop_reason == "maxiter" and r.iterations == 7
    r = fit(founding_mll(), "sgd", lr=1e-12, maxiter=500, patience=5, progress=False)
    assert r.stop_reason == "patience" and r.iterations <= 6


class _Interrupting(torch.nn.Module):
    """Wraps an MLL and raises KeyboardInterrupt on the k-th call (as a user pressing Ctrl-C)."""

    def __init__(self, mll, k):
        super().__init__()
        self.inner, self.model, self.likelihood, self.k, self.calls = mll, mll.model, mll.likelihood, k, 0

    def forward(self, output, target):
        self.calls += 1
        if self.calls == self.k:
            raise KeyboardInterrupt
        return self.inner(output, target)


def test_keyboard_interrupt_leaves_best_parameters():
    mll = founding_mll()
    start = loss_of(mll)
    r = fit(_Interrupting(mll, 12), progress=False)
    assert r.stop_reason == "interrupted"
    assert r.loss < start
    assert loss_of(mll) == pytest.approx(r.loss, abs=1e-12)


class _FailsWithoutJitter(torch.nn.Module):
    """Raises NotPSDError unless the Cholesky jitter was raised above its default."""

    def __init__(self, mll):
        super().__init__()
        self.inner, self.model, self.likelihood = mll, mll.model, mll.likelihood

    def forward(self, output, target):
        if torchgp.settings.cholesky_jitter.value(torch.float64) < 1e-7:
            raise NotPSDError("matrix not positive definite")
        return self.inner(output, target)


def test_not_psd_is_retried_with_more_jitter():
    r = fit(_FailsWithoutJitter(founding_mll()), progress=False)
    assert r.success
    assert any("cholesky_jitter=1e-07" in w for w in r.warnings)
    with pytest.raises(NotPSDError, match="every start failed"):
        fit(_FailsWithoutJitter(founding_mll()), max_jitter_retries=0, progress=False)


def test_bad_arguments_are_explained():
    with pytest.raises(InputError, match="unknown optimizer"):
        fit(founding_mll(), "newton-raphson")
    with pytest.raises(InputError, match="marginal log-likelihood"):
        fit(torch.nn.Linear(2, 2))


def test_batch_model_fits():
    X = torch.rand(2, 15, 1, dtype=torch.float64)
    model = ExactGPModel(X, torch.sin(6 * X[..., 0]), kernel="rbf").double()
    r = fit(torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model), progress=False)
    assert r.success and math.isfinite(r.loss)


def test_variational_model_on_minibatches():
    pytest.importorskip("torchgp.mlls.variational_elbo")
    from torch.utils.data import DataLoader, TensorDataset

    from torchgp.io import _approximate_gp_model_class

    X = torch.rand(120, 1, dtype=torch.float64)
    y = torch.sin(6 * X[:, 0]) + 0.1 * torch.randn(120, dtype=torch.float64)
    model = _approximate_gp_model_class()(X[:10].clone()).double()
    likelihood = torchgp.likelihoods.GaussianLikelihood().double()
    elbo = torchgp.mlls.VariationalELBO(likelihood, model, num_data=120)
    loader = DataLoader(TensorDataset(X, y), batch_size=40, shuffle=True, generator=torch.Generator().manual_seed(0))
    r = fit(elbo, "adam", data=loader, lr=0.05, maxiter=25, progress=False)
    assert r.iterations == 25 and r.function_evals == 75
    assert r.history[-1] < r.history[0]
    with pytest.raises(InputError, match="holds no training data"):
        fit(elbo)


class _WatchedMean(torchgp.means.ConstantMean):
    """A mean that checks, on every evaluation, that the process-wide warning filters are the user's."""

    def __init__(self, expected_filters):
        super().__init__()
        self.expected = expected_filters
        self.calls = 0

    def forward(self, x):
        import warnings

        from torchgp import _record

        assert warnings.filters == self.expected, "fit changed the process-wide warning filters"
        self.calls += 1
        if self.calls == 1:
            _record.warn("a numerical recovery happened", torchgp.errors.NumericalWarning)
        return super().forward(x)


def test_fit_leaves_warning_filters_alone_and_records_library_warnings():
    import warnings

    mll = founding_mll()
    with pytest.warns(torchgp.errors.NumericalWarning, match="numerical recovery"):
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the user's own filters, set before fit
        snapshot = list(warnings.filters)
        mll.model.mean_module = _WatchedMean(snapshot).double()
        r = fit(mll, maxiter=5, progress=False)
        assert warnings.filters == snapshot
    assert mll.model.mean_module.calls > 1
    assert r.warnings.count("a numerical recovery happened") == 1


def test_fit_records_only_its_own_thread():
    import threading

    from torchgp import _record

    seen = []

    def other():
        _record.warn("from another thread", RuntimeWarning)

    with _record.recording() as mine:
        t = threading.Thread(target=other)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t.start()
            t.join()
        seen.extend(mine)
    assert seen == []


def test_fit_restores_scipys_blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    fit(founding_mll(), maxiter=3, progress=False)
    assert [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()] == before
