"""``fit``'s parts: the flat parameter vector, the module split, the input-scale advice it passes on."""

import warnings

import numpy as np
import pytest
import torch

import torchgp
from torchgp.optim import result as result_module
from torchgp.optim._run import _ParamVector, _Run
from torchgp.optim.fit import FitResult, fit


def test_fit_result_is_one_class_everywhere():
    assert FitResult is result_module.FitResult is torchgp.optim.fit.FitResult
    assert torchgp.fit is fit


def test_param_vector_round_trip_mixed_dtypes_and_shapes():
    a = torch.nn.Parameter(torch.arange(6, dtype=torch.float64).reshape(2, 3))
    b = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float32))
    c = torch.nn.Parameter(torch.zeros(4, 1, dtype=torch.float64))
    vec = _ParamVector([a, b, c])
    x = vec.get()
    assert x.dtype == np.float64 and x.shape == (11,)
    np.testing.assert_array_equal(x[:6], np.arange(6.0))
    assert x[6] == 0.5
    new = np.linspace(-1.0, 1.0, 11)
    vec.set(new)
    np.testing.assert_array_equal(a.detach().numpy().reshape(-1), new[:6])
    assert b.dtype == torch.float32 and float(b.detach()) == pytest.approx(new[6], rel=1e-7)
    np.testing.assert_array_equal(c.detach().numpy().reshape(-1), new[7:])
    got = vec.get()
    got[0] = 99.0  # the returned array is the caller's own: writing it leaves the parameters alone
    assert float(a.detach().reshape(-1)[0]) == new[0]


def test_param_vector_gradients_in_order_with_missing_ones_as_zero():
    a = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    c = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    vec = _ParamVector([a, b, c])
    (a.sum() * 2 + (c * 5).sum()).backward()  # b gets no gradient
    np.testing.assert_array_equal(vec.grad(), [2.0, 2.0, 0.0, 0.0, 0.0, 5.0])
    vec.zero_grad()
    assert all(p.grad is None for p in (a, b, c))


def test_run_keeps_the_point_of_its_best_evaluation():
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    run = _Run(_ParamVector([p]))
    run.record_eval(3.0, np.array([1.0, 2.0]))
    run.record_eval(5.0, np.array([7.0, 7.0]))
    run.record_eval(float("nan"), np.array([8.0, 8.0]))
    assert run.best_loss == 3.0 and run.nfev == 3
    np.testing.assert_array_equal(run.best_x, [1.0, 2.0])


class _GP(torchgp.models.ExactGP):
    def __init__(self, x, y, lik, kernel):
        super().__init__(x, y, lik)
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(kernel)

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _mll(x, kernel=None):
    y = torch.sin(torch.linspace(0, 6, x.shape[0], dtype=torch.float64))
    lik = torchgp.likelihoods.GaussianLikelihood()
    kernel = torchgp.kernels.RBFKernel() if kernel is None else kernel
    return torchgp.mlls.ExactMarginalLogLikelihood(lik, _GP(x, y, lik, kernel).double())


def _advice(mll):
    """The input-scale warnings a fit that optimises the lengthscales as given issues, and its result."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = fit(mll, maxiter=2, progress=False, standardize_inputs=False)
    return [str(w.message) for w in caught if "lengthscale" in str(w.message)], r


def test_fit_reports_inputs_far_from_the_lengthscale_once_and_records_it():
    x = torch.linspace(0, 3e6, 20, dtype=torch.float64).unsqueeze(-1)
    messages, r = _advice(_mll(x))
    assert len(messages) == 1  # the model's own check, not repeated by fit
    assert "covar_module.base_kernel" in messages[0] and "Standardise the inputs" in messages[0]
    assert messages[0] in r.warnings
    tiny = torch.linspace(0, 1e-5, 20, dtype=torch.float64).unsqueeze(-1)
    assert len(_advice(_mll(tiny))[0]) == 1


def test_fit_gives_no_scale_advice_for_scaled_inputs_or_a_matching_lengthscale():
    x = torch.linspace(0, 3, 20, dtype=torch.float64).unsqueeze(-1)
    assert _advice(_mll(x))[0] == []
    far = torch.linspace(0, 3e6, 20, dtype=torch.float64).unsqueeze(-1)
    kernel = torchgp.kernels.RBFKernel()
    kernel.lengthscale = 1e6
    assert _advice(_mll(far, kernel))[0] == []


def test_scale_advice_reads_only_the_kernels_active_dims():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 2, generator=g, dtype=torch.float64)
    x[:, 1] *= 1e7  # a huge column the kernel does not look at
    assert _advice(_mll(x, torchgp.kernels.RBFKernel(active_dims=[0])))[0] == []
    assert len(_advice(_mll(x, torchgp.kernels.RBFKernel(active_dims=[1])))[0]) == 1
