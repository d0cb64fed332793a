"""Every bad input gives an error naming the argument, the problem and the fix."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests.models._models import ExactModel, data, make_model
from torchgp.errors import (
    InputError,
    KernelMemoryError,
    ModelTypeError,
    NonFiniteError,
    NotPSDError,
    ShapeError,
)
from torchgp.utils.warnings import GPInputWarning


def _model(X, y):
    return ExactModel(X, y, torchgp.likelihoods.GaussianLikelihood()).double()


def test_length_mismatch():
    X, y = data(n=10)
    with pytest.raises(ShapeError, match=r"train_targets must have shape .*n = 10.*got \(9,\)"):
        _model(X, y[:9])


@pytest.mark.parametrize(
    "X, y, match",
    [
        (torch.tensor(1.0), torch.zeros(1), "train_inputs.*scalar"),
        (torch.zeros(5, 1), torch.zeros(5, 2), r"train_targets must have shape \(\*batch, n\)"),
        (torch.zeros(5, 1), torch.zeros(()), "train_targets"),
        (torch.zeros(2, 5, 1), torch.zeros(5, 3), "train_targets"),
    ],
    ids=["scalar_inputs", "two_column_targets", "scalar_targets", "transposed_batch_targets"],
)
def test_wrong_ndim(X, y, match):
    with pytest.raises(ShapeError, match=match):
        _model(X.double(), y.double())


def test_empty_training_data():
    with pytest.raises(InputError, match="empty.*at least one training point"):
        _model(torch.zeros(0, 1), torch.zeros(0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_training_inputs(bad):
    X, y = data(n=10)
    X[3, 0] = bad
    with pytest.raises(InputError, match=r"train_inputs holds NaN or inf in 1 row.*\[3\].*Drop or impute"):
        _model(X, y)


def test_infinite_training_targets():
    X, y = data(n=10)
    y[[2, 7]] = float("inf")
    with pytest.raises(InputError, match=r"train_targets holds inf at 2 point.*\[2, 7\]"):
        _model(X, y)
    model = _model(*data(n=10))
    with pytest.raises(InputError, match="train_targets"):
        model.set_train_data(targets=y)


def test_nan_training_targets_warn_then_the_mll_refuses_them():
    # GPyTorch accepts NaN targets when the model is built: the NaN policy may be set around training instead
    X, y = data(n=10)
    y[[2, 7]] = float("nan")
    with pytest.warns(GPInputWarning, match=r"NaN at 2 point.*\[2, 7\].*observation_nan_policy"):
        model = _model(X, y)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    with pytest.raises(NonFiniteError, match="NaN"):
        mll(model(X), y)
    with torchgp.settings.observation_nan_policy("mask"):
        assert torch.isfinite(mll(model(X), y))


def test_test_inputs_with_wrong_feature_count():
    model, _, _ = make_model(d=2)
    model.eval()
    with pytest.raises(ShapeError, match=r"Test inputs have 3 features.*trained on 2.*\(t, 2\)"):
        model(torch.randn(4, 3, dtype=torch.float64))


def test_predict_without_training_data():
    model = ExactModel(None, None, torchgp.likelihoods.GaussianLikelihood())
    model.eval()
    with pytest.raises(InputError, match="no training data.*set_train_data"):
        model(torch.randn(3, 1))
    with torchgp.settings.prior_mode():
        assert model(torch.randn(3, 1)).mean.shape == (3,)


class _BernoulliLike(torchgp.likelihoods.Likelihood):
    def forward(self, f):
        return torch.distributions.Bernoulli(logits=f)


def test_non_gaussian_likelihood_rejected():
    X, y = data(n=5)
    with pytest.raises(ModelTypeError, match="Gaussian likelihood.*_BernoulliLike.*ApproximateGP"):
        ExactModel(X, y, _BernoulliLike())
    model, _, _ = make_model()
    with pytest.raises(ModelTypeError, match="Gaussian likelihood"):
        torchgp.mlls.ExactMarginalLogLikelihood(_BernoulliLike(), model)


def test_train_mode_called_on_other_inputs():
    model, X, _ = make_model()
    with pytest.raises(InputError, match="train mode.*model.eval"):
        model(X + 1)


# ------------------------------------------------------------------ hyperparameters validated when set
@pytest.mark.parametrize(
    "name, value, match",
    [
        ("covar_module.base_kernel.lengthscale", 0.0, "lengthscale must be > 0"),
        ("covar_module.base_kernel.lengthscale", -1.0, "lengthscale must be > 0"),
        ("covar_module.outputscale", float("nan"), "outputscale must be finite"),
        ("likelihood.noise", -0.1, "noise must be > 0.0001"),
        ("likelihood.noise", 1e-6, "noise must be > 0.0001"),
        ("likelihood.noise", float("inf"), "noise must be finite"),
        ("covar_module.base_kernel.raw_lengthscale", float("nan"), "raw_lengthscale must be finite"),
    ],
)
def test_bad_hyperparameter_values_raise_and_change_nothing(name, value, match):
    model, _, _ = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError, match=match):
        model.initialize(**{name: value})
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bad_values_via_attribute_assignment():
    k = torchgp.kernels.RBFKernel()
    with pytest.raises(InputError, match="lengthscale must be > 0"):
        k.lengthscale = 0
    lik = torchgp.likelihoods.GaussianLikelihood()
    with pytest.raises(InputError, match="noise"):
        lik.noise = -1.0
    k2 = torchgp.kernels.RBFKernel(lengthscale_constraint=torchgp.constraints.Interval(0.1, 2.0))
    with pytest.raises(InputError, match=r"lengthscale must be in \(0.1, 2\)"):
        k2.lengthscale = 3.0
    assert torch.all(torch.isfinite(k2.raw_lengthscale))


def test_wrong_hyperparameter_shape():
    k = torchgp.kernels.RBFKernel(ard_num_dims=2)
    with pytest.raises(InputError, match=r"lengthscale has shape \(1, 2\)"):
        k.lengthscale = torch.ones(3)


def test_initialize_unknown_name():
    model, _, _ = make_model()
    with pytest.raises(AttributeError, match="no attribute 'lenghtscale'"):
        model.initialize(**{"covar_module.base_kernel.lenghtscale": 1.0})
    with pytest.raises(AttributeError, match="no submodule 'covar'"):
        model.initialize(**{"covar.lengthscale": 1.0})


# ------------------------------------------------------------------ non-finite losses
@pytest.mark.parametrize(
    "raw",
    [
        "covar_module.base_kernel.raw_lengthscale",
        "covar_module.raw_outputscale",
        "mean_module.raw_constant",
        "likelihood.noise_covar.raw_noise",
    ],
)
def test_nonfinite_loss_names_the_parameter(raw):
    model, X, y = make_model()
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    param = dict(model.named_parameters())[raw]
    param.data.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=raw.split(".")[-1]):
        mll(model(X), y)
    with pytest.raises(NonFiniteError, match=raw):
        model.log_likelihood(model(X), y)


def test_overflowing_parameter_named_too():
    model, X, y = make_model()
    model.mean_module.raw_constant.data.fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="mean_module.raw_constant"):
        model.log_likelihood(model(X), y)


# ------------------------------------------------------------------ numerics
class _Indefinite(torchgp.kernels.Kernel):
    def forward(self, x1, x2):
        return torch.cos(3 * torch.cdist(x1, x2)) - 0.5


def test_not_psd_error_names_cause_and_fix():
    X, y = data(n=20, d=2)
    model = ExactModel(X, y, torchgp.likelihoods.GaussianLikelihood(), kernel=_Indefinite()).double()
    with pytest.raises(NotPSDError, match="indefinite.*not a valid covariance function"):
        model.log_likelihood(model(X), y)


def test_dense_kernel_over_memory_budget_refused_up_front():
    model, X, y = make_model(n=50)
    need = 50 * 50 * 8
    with torchgp.settings.max_dense_memory(need - 1):
        with pytest.raises(KernelMemoryError, match=r"50x50.*needs 19\.5 KiB.*iterative path.*ApproximateGP"):
            model.log_likelihood(model(X), y)
        with pytest.raises(KernelMemoryError, match="needs"):
            model.covar_module(X).to_dense()
        model.eval()
        with pytest.raises(KernelMemoryError, match="predict in smaller batches"):
            model(torch.randn(3, 1, dtype=torch.float64))
    with torchgp.settings.max_dense_memory(need):
        model.covar_module(X).to_dense()


def test_test_matrix_over_memory_budget_refused():
    model, X, _ = make_model(n=10)
    model.eval()
    model(torch.randn(2, 1, dtype=torch.float64))  # posterior cached; only K(X*, X) is new
    with torchgp.settings.max_dense_memory(10 * 10 * 8 + 1):
        with pytest.raises(KernelMemoryError, match="needs"):
            model(torch.randn(40, 1, dtype=torch.float64)).mean
