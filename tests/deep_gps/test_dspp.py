"""DSPP: one site equals PPGPR, GPyTorch's numbers on the same model, the quadrature inputs, training, errors."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.deep_gps._models import DT, OneDSPPLayer, OneLayerDSPP, dspp_classes, randomize, toy_data
from tests.variational._helpers import SVGP
from torchgp.errors import InputError, ModelTypeError
from torchgp.mlls import DeepPredictiveLogLikelihood, PredictiveLogLikelihood
from torchgp.models.deep_gps import DeepGP
from torchgp.models.deep_gps.dspp import DSPP


def test_one_site_dspp_equals_ppgpr():
    X, y = toy_data(10)
    torch.manual_seed(0)
    svgp = SVGP(X[:4].clone()).to(DT)
    randomize(svgp)
    model = OneLayerDSPP(OneDSPPLayer(X[:4].clone()).to(DT)).to(DT)
    keys = model.layer.load_state_dict(svgp.state_dict(), strict=False)
    assert keys.missing_keys == ["quad_sites"] and not keys.unexpected_keys
    lik = torchgp.likelihoods.GaussianLikelihood().to(DT)
    lik.noise = 0.05
    out = model(X)
    assert out.batch_shape == (1,) and out.event_shape == (10,)
    obj = DeepPredictiveLogLikelihood(lik, model, num_data=30)(out, y)
    ref = PredictiveLogLikelihood(lik, svgp, num_data=30)(svgp(X), y)
    assert_close(obj, ref)
    assert_close(model.quad_weights, torch.zeros(1, dtype=DT))
    model.eval(), svgp.eval()
    assert_close(model(X).mean[0], svgp(X).mean)
    assert_close(model(X).variance[0], svgp(X).variance)


def test_mixture_weights_and_quadrature_inputs():
    torch.manual_seed(1)
    Layer, Model = dspp_classes(torchgp, Q=3)
    model = Model(2, hidden=2).to(DT)
    randomize(model, 1)
    assert_close(model.quad_weights.exp().sum(), torch.tensor(1.0, dtype=DT))
    X, _ = toy_data(n=6, d=2, seed=1)
    hidden = model.hidden_layer(X)
    assert hidden.batch_shape == (3,) and hidden.event_shape == (6, 2)
    out = model.last_layer(hidden)
    assert out.batch_shape == (3,) and out.event_shape == (6,)
    # component q of the output is the last layer at μ_q + σ_q ⊙ ξ_q (Jankowiak et al. 2020, eq. 10)
    xi = model.last_layer.quad_sites
    for q in range(3):
        x_q = hidden.mean[q] + hidden.stddev[q] * xi[q]
        one = model.last_layer._marginals(x_q)
        assert_close(out.mean[q], one.mean)
        assert_close(out.variance[q], one.variance)


@pytest.mark.parametrize("Q", [1, 3])
def test_objective_matches_gpytorch(Q):
    X, y = toy_data(n=8, d=2, seed=2)
    torch.manual_seed(0)
    model = dspp_classes(torchgp, Q)[1](2).to(DT)
    randomize(model, 2)
    model.likelihood.noise = 0.1
    torch.manual_seed(0)
    ref = dspp_classes(gpytorch, Q)[1](2).to(DT)
    ref.load_state_dict(model.state_dict())
    obj = DeepPredictiveLogLikelihood(model.likelihood, model, num_data=20)(model(X), y)
    obj_ref = gpytorch.mlls.DeepPredictiveLogLikelihood(ref.likelihood, ref, num_data=20)(ref(X), y)
    assert_close(obj, obj_ref.detach())
    obj.backward()
    obj_ref.backward()
    for (name, p), (name_ref, p_ref) in zip(model.named_parameters(), ref.named_parameters()):
        assert name == name_ref
        if p_ref.grad is None:
            assert p.grad is None or not p.grad.any(), name
        else:
            assert_close(p.grad, p_ref.grad, loose=10)


def test_two_layer_dspp_trains():
    X, y = toy_data(n=30, seed=3)
    torch.manual_seed(0)
    model = dspp_classes(torchgp, Q=3)[1](1).to(DT)
    mll = DeepPredictiveLogLikelihood(model.likelihood, model, num_data=30)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(80):
        opt.zero_grad()
        loss = -mll(model(X), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        mean = (model.quad_weights.exp().unsqueeze(-1) * model.likelihood(model(X)).mean).sum(0)
    assert losses[-1] < losses[0] - 0.2
    assert (mean - y).pow(2).mean().sqrt() < 0.6 * y.std()


def test_errors():
    with pytest.raises(InputError, match="num_quad_sites"):
        DSPP(0)
    X, y = toy_data(10)
    lik = torchgp.likelihoods.GaussianLikelihood()
    with pytest.raises(ModelTypeError, match="DSPP"):
        DeepPredictiveLogLikelihood(lik, DeepGP(), num_data=10)
    model = OneLayerDSPP(OneDSPPLayer(X[:3].clone()).to(DT))
    with pytest.raises(InputError, match="combine_terms"):
        DeepPredictiveLogLikelihood(lik, model, num_data=10, combine_terms=False)
    Layer, _ = dspp_classes(torchgp, Q=2)
    two_sites = Layer(1, 2).to(DT)(X)
    with pytest.raises(InputError, match="Q = 3"):
        dspp_classes(torchgp, Q=3)[0](2, None).to(DT)(two_sites)
