"""Module: constrained parameters, dotted initialize, priors, GPyTorch state_dict keys."""

from __future__ import annotations

import pickle

import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.models._models import ExactModel, data, make_model

GPYTORCH_KEYS = {
    "likelihood.noise_covar.raw_noise",
    "likelihood.noise_covar.raw_noise_constraint.lower_bound",
    "likelihood.noise_covar.raw_noise_constraint.upper_bound",
    "mean_module.raw_constant",
    "covar_module.raw_outputscale",
    "covar_module.raw_outputscale_constraint.lower_bound",
    "covar_module.raw_outputscale_constraint.upper_bound",
    "covar_module.base_kernel.raw_lengthscale",
    "covar_module.base_kernel.raw_lengthscale_constraint.lower_bound",
    "covar_module.base_kernel.raw_lengthscale_constraint.upper_bound",
}


def test_state_dict_keys_as_in_gpytorch():
    model, _, _ = make_model()
    assert set(model.state_dict()) == GPYTORCH_KEYS
    assert model.covar_module.base_kernel.raw_lengthscale.shape == (1, 1)
    assert model.covar_module.raw_outputscale.shape == ()
    assert model.likelihood.noise_covar.raw_noise.shape == (1,)


def test_state_dict_round_trip():
    model, X, y = make_model()
    model.eval()
    Xs = torch.randn(5, 1, dtype=torch.float64)
    expected = model(Xs)
    other = ExactModel(X, y, torchgp.likelihoods.GaussianLikelihood()).double()
    other.load_state_dict(model.state_dict())
    other.eval()
    got = other(Xs)
    assert_close(got.mean, expected.mean)
    assert_close(got.covariance_matrix, expected.covariance_matrix)
    clone = pickle.loads(pickle.dumps(model))
    assert_close(clone(Xs).mean, expected.mean)


def test_initialize_dotted_names_sets_constrained_values():
    model, _, _ = make_model()
    model.initialize(**{"covar_module.base_kernel.lengthscale": 0.5, "likelihood.noise_covar.noise": 0.3})
    assert_close(model.covar_module.base_kernel.lengthscale, torch.tensor([[0.5]]))
    assert_close(model.likelihood.noise, torch.tensor([0.3]))
    raw = torch.tensor([[0.25]], dtype=torch.float64)
    model.initialize(**{"covar_module.base_kernel.raw_lengthscale": raw})
    assert_close(model.covar_module.base_kernel.lengthscale, torch.nn.functional.softplus(raw))
    k = torchgp.kernels.RBFKernel(ard_num_dims=3).initialize(lengthscale=torch.tensor([1.0, 2.0, 3.0]))
    assert_close(k.lengthscale, torch.tensor([[1.0, 2.0, 3.0]]))
    assert k.initialize(lengthscale=4.0) is k
    assert_close(k.lengthscale, torch.full((1, 3), 4.0))


def test_constrained_property_is_differentiable_view():
    k = torchgp.kernels.RBFKernel()
    k.lengthscale = 2.0
    k.lengthscale.sum().backward()
    assert_close(k.raw_lengthscale.grad, torch.sigmoid(k.raw_lengthscale.detach()))


def test_named_hyperparameters_and_constraints():
    model, _, _ = make_model()
    names = {n for n, _ in model.named_hyperparameters()}
    assert names == {n for n, _ in model.named_parameters()}
    assert "covar_module.base_kernel.raw_lengthscale" in names
    cons = {n: c for n, _, c in model.named_parameters_and_constraints()}
    assert isinstance(cons["covar_module.base_kernel.raw_lengthscale"], torchgp.constraints.Positive)
    assert isinstance(cons["likelihood.noise_covar.raw_noise"], torchgp.constraints.GreaterThan)
    assert cons["mean_module.raw_constant"] is None
    assert (
        model.constraint_for_parameter_name("covar_module.raw_outputscale")
        is model.covar_module.raw_outputscale_constraint
    )


def test_register_prior_and_named_priors():
    prior = torchgp.priors.GammaPrior(3.0, 6.0)
    k = torchgp.kernels.ScaleKernel(
        torchgp.kernels.RBFKernel(lengthscale_prior=torchgp.priors.LogNormalPrior(0.0, 1.0)), outputscale_prior=prior
    )
    names = [n for n, *_ in k.named_priors()]
    assert names == ["outputscale_prior", "base_kernel.lengthscale_prior"]
    expected = (
        prior.log_prob(k.outputscale)
        + torchgp.priors.LogNormalPrior(0.0, 1.0).log_prob(k.base_kernel.lengthscale).sum()
    )
    assert_close(k.log_prior(), expected)
    m = torchgp.means.ConstantMean()
    m.register_prior("my_prior", torchgp.priors.NormalPrior(1.0, 2.0), "raw_constant")
    assert [n for n, *_ in m.named_priors()] == ["my_prior"]
    m.register_prior("closure_prior", torchgp.priors.NormalPrior(0.0, 1.0), lambda mod: mod.raw_constant * 2)
    assert len(list(m.named_priors())) == 2
    with pytest.raises(AttributeError, match="no parameter 'nope'"):
        m.register_prior("bad", torchgp.priors.NormalPrior(0.0, 1.0), "nope")


def test_sample_from_prior():
    k = torchgp.kernels.RBFKernel(ard_num_dims=2, lengthscale_prior=torchgp.priors.UniformPrior(2.0, 3.0))
    k.sample_from_prior("lengthscale_prior")
    assert torch.all((k.lengthscale > 2.0) & (k.lengthscale < 3.0))
    assert k.lengthscale.shape == (1, 2)


def test_constraint_initial_value_and_register_constraint():
    k = torchgp.kernels.RBFKernel(lengthscale_constraint=torchgp.constraints.GreaterThan(0.5, initial_value=2.0))
    assert_close(k.lengthscale, torch.tensor([[2.0]]))
    k.register_constraint("raw_lengthscale", torchgp.constraints.Interval(0.0, 10.0))
    assert k.lengthscale.item() < 10
    with pytest.raises(AttributeError, match="no parameter"):
        k.register_constraint("raw_nothing", torchgp.constraints.Positive())


def test_non_finite_parameters_names_them():
    model, X, y = make_model()
    assert model.non_finite_parameters() == []
    model.covar_module.raw_outputscale.data.fill_(float("inf"))
    assert model.non_finite_parameters() == ["covar_module.raw_outputscale"]


def test_to_dtype_moves_constraints_and_priors():
    X, y = data(n=5, dtype=torch.float32)
    k = torchgp.kernels.RBFKernel(lengthscale_prior=torchgp.priors.GammaPrior(2.0, 1.0))
    model = ExactModel(X, y, torchgp.likelihoods.GaussianLikelihood(), kernel=k).double()
    assert model.covar_module.raw_lengthscale.dtype == torch.float64
    assert model.covar_module.lengthscale_prior.concentration.dtype == torch.float64
    assert model.likelihood.noise_covar.raw_noise_constraint.lower_bound.dtype == torch.float64


def test_named_constraints_lists_every_constraint_by_dotted_name():
    import torchgp

    kernel = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel())
    names = dict(kernel.named_constraints())
    assert set(names) == {"raw_outputscale_constraint", "base_kernel.raw_lengthscale_constraint"}
    assert all(isinstance(c, torchgp.constraints.Positive) for c in kernel.constraints())
