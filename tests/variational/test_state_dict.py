"""GPyTorch 1.15 state_dicts load into the same torchgp models and give GPyTorch's predictions."""

from __future__ import annotations

import copy
import pickle
import warnings

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.variational._helpers import SVGP
from tests.variational._models import model_class

F64 = torch.float64


def _svgp(lib, Z, strategy="VariationalStrategy", dist="CholeskyVariationalDistribution"):
    q = getattr(lib.variational, dist)(Z.shape[-2])
    make = lambda model: getattr(lib.variational, strategy)(model, Z, q, learn_inducing_locations=True)  # noqa: E731
    return model_class(lib)(make, ard_num_dims=Z.shape[-1]).double()


def _exact(lib, X, y):
    class Exact(lib.models.ExactGP):
        def __init__(self):
            super().__init__(X, y, lib.likelihoods.GaussianLikelihood())
            self.mean_module = lib.means.ConstantMean()
            self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel())

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return Exact().double()


def _randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype) + (0.5 if "raw" in name else 0.0))


def _data(n=10, d=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g, dtype=torch.float64), torch.rand(4, d, generator=g, dtype=torch.float64)


def _predict(model, lik, x):
    model.eval(), lik.eval()
    with torch.no_grad():
        f = model(x)
        y = lik(f)
    return f.mean, f.variance, y.mean, y.variance


@pytest.mark.parametrize("strategy", ["VariationalStrategy", "UnwhitenedVariationalStrategy"])
@pytest.mark.parametrize(
    "dist", ["CholeskyVariationalDistribution", "MeanFieldVariationalDistribution", "DeltaVariationalDistribution"]
)
def test_svgp_state_dict_from_gpytorch(strategy, dist):
    Z, x = _data()
    ref = _svgp(gpytorch, Z, strategy, dist)
    _randomise(ref)
    ref.variational_strategy.variational_params_initialized.fill_(1)
    ref_lik = gpytorch.likelihoods.GaussianLikelihood().double()
    ref_lik.noise = 0.07
    ours = _svgp(torchgp, Z.clone() + 1.0, strategy, dist)
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    ours.load_state_dict(ref.state_dict())  # strict: every key known, none missing
    lik.load_state_dict(ref_lik.state_dict())
    for a, b in zip(_predict(ours, lik, x), _predict(ref, ref_lik, x)):
        assert_close(a, b)
    assert set(ours.state_dict()) == set(ref.state_dict())


def test_unwhitened_parameters_are_whitened_on_first_call_as_gpytorch_does():
    Z, x = _data()
    ref = _svgp(gpytorch, Z)
    _randomise(ref, seed=3)
    with torch.no_grad():
        q = ref.variational_strategy._variational_distribution
        q.chol_variational_covar.copy_(
            torch.eye(10, dtype=torch.float64) * 0.4 + 0.05 * q.chol_variational_covar.tril()
        )
    ref.variational_strategy.variational_params_initialized.fill_(1)
    sd = ref.state_dict()
    sd["variational_strategy.updated_strategy"] = torch.tensor(False)
    ours = _svgp(torchgp, Z)
    ours.load_state_dict(sd)
    assert not bool(ours.variational_strategy.updated_strategy)
    ref.load_state_dict(sd)
    lik, ref_lik = torchgp.likelihoods.GaussianLikelihood().double(), gpytorch.likelihoods.GaussianLikelihood().double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPyTorch's jitter warnings
        for a, b in zip(_predict(ours, lik, x), _predict(ref, ref_lik, x)):
            assert_close(a, b, loose=1e3)  # GPyTorch whitens with its own jitter on K_zz
    assert bool(ours.variational_strategy.updated_strategy)


def test_torchgp_state_dict_without_the_flag_still_loads():
    Z, _ = _data()
    model = _svgp(torchgp, Z)
    sd = model.state_dict()
    sd.pop("variational_strategy.updated_strategy")
    other = _svgp(torchgp, Z)
    other.load_state_dict(sd)
    assert bool(other.variational_strategy.updated_strategy)


def test_exact_gp_state_dict_from_gpytorch():
    X, x = _data(n=12, d=1)
    y = torch.sin(4 * X).squeeze(-1)
    ref = _exact(gpytorch, X, y)
    _randomise(ref, seed=2)
    ours = _exact(torchgp, X, y)
    ours.load_state_dict(ref.state_dict())
    for a, b in zip(_predict(ours, ours.likelihood, x), _predict(ref, ref.likelihood, x)):
        assert_close(a, b)


def test_legacy_constant_key_loads_with_a_warning():
    X, x = _data(n=12, d=1)
    y = torch.sin(4 * X).squeeze(-1)
    ref = _exact(gpytorch, X, y)
    _randomise(ref, seed=4)
    sd = ref.state_dict()
    sd["mean_module.constant"] = sd.pop("mean_module.raw_constant").reshape(1)  # GPyTorch < 1.9: (*batch, 1)
    ours = _exact(torchgp, X, y)
    with pytest.warns(torchgp.models.gp.OldVersionWarning, match="raw_constant"):
        ours.load_state_dict(sd)
    assert_close(ours.mean_module.constant, ref.mean_module.constant)
    for a, b in zip(_predict(ours, ours.likelihood, x), _predict(ref, ref.likelihood, x)):
        assert_close(a, b)


def test_models_with_load_hooks_copy_and_pickle():
    Z, x = _data()
    model = SVGP(Z).double()
    model(x)  # initialises q(u) (random mean noise) before the copies are made
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        clone.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert_close(clone.eval()(x).mean, model.eval()(x).mean)


def test_priors_in_gpytorch_state_dicts_load_and_give_the_same_log_prior():
    def build(lib):
        lik = lib.likelihoods.GaussianLikelihood(noise_prior=lib.priors.HalfCauchyPrior(torch.tensor(0.2, dtype=F64)))
        kern = lib.kernels.ScaleKernel(
            lib.kernels.RBFKernel(
                lengthscale_prior=lib.priors.LogNormalPrior(torch.tensor(0.1, dtype=F64), torch.tensor(0.5, dtype=F64))
            ),
            outputscale_prior=lib.priors.HalfNormalPrior(torch.tensor(1.5, dtype=F64)),
        )
        return torch.nn.ModuleDict({"likelihood": lik, "covar_module": kern}).double()

    ref, ours = build(gpytorch), build(torchgp)
    _randomise(ref, seed=5)
    with torch.no_grad():  # other prior parameters than ours' defaults
        ref["likelihood"].noise_covar.noise_prior.scale = torch.tensor(0.7, dtype=F64)
    ours.load_state_dict(ref.state_dict())

    for name in ("likelihood", "covar_module"):
        ref_lp = sum(p.log_prob(c(m)).sum() for _, m, p, c, _ in ref[name].named_priors())
        assert_close(ours[name].log_prior(), ref_lp)


def test_natural_distributions_share_gpytorchs_base():
    base = torchgp.variational._NaturalVariationalDistribution
    assert isinstance(torchgp.variational.NaturalVariationalDistribution(3), base)
    assert isinstance(torchgp.variational.TrilNaturalVariationalDistribution(3), base)
    assert not isinstance(torchgp.variational.CholeskyVariationalDistribution(3), base)
