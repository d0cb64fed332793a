"""Deep GPs: one layer equals an SVGP, GPyTorch's numbers on the same model, shapes, training, errors."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.deep_gps._models import (
    DT,
    OneLayer,
    OneLayerDeepGP,
    deep_gp_class,
    layer_class,
    multitask_deep_gp,
    randomize,
    toy_data,
)
from tests.variational._helpers import SVGP
from torchgp.errors import InputError, ModelTypeError, ShapeError
from torchgp.mlls import DeepApproximateMLL, VariationalELBO
from torchgp.models.deep_gps import AbstractDeepGP, AbstractDeepGPLayer, DeepGP, DeepLikelihood


def test_one_layer_deep_gp_equals_svgp():
    X, y = toy_data(12)
    torch.manual_seed(0)
    svgp = SVGP(X[:5].clone()).to(DT)
    svgp.covar_module.base_kernel.lengthscale = 0.7
    randomize(svgp)
    deep = OneLayerDeepGP(OneLayer(X[:5].clone()).to(DT))
    deep.layer.load_state_dict(svgp.state_dict())
    lik = torchgp.likelihoods.GaussianLikelihood().to(DT)
    lik.noise = 0.05
    with torchgp.settings.num_likelihood_samples(3):
        out = deep(X)
        assert out.batch_shape == (3,) and out.event_shape == (12,)
        elbo_deep = DeepApproximateMLL(VariationalELBO(lik, deep, num_data=40))(out, y)
        elbo_svgp = VariationalELBO(lik, svgp, num_data=40)(svgp(X), y)
        assert_close(elbo_deep, elbo_svgp)
        assert abs(float(elbo_svgp.detach())) > 1e-3  # not a trivial zero
        deep.eval(), svgp.eval(), lik.eval()
        pred_deep, pred_svgp = lik(deep(X)), lik(svgp(X))
    for s in range(3):
        assert_close(pred_deep.mean[s], pred_svgp.mean)
        assert_close(pred_deep.variance[s], pred_svgp.variance)


def test_layer_outputs_equal_a_batch_of_svgps():
    # output_dims = h GPs: the multitask output's task k is GP k of a batch SVGP with batch_shape (h,)
    X, _ = toy_data(n=7, d=2)
    h = 3
    torch.manual_seed(1)
    Z = torch.randn(h, 4, 2, dtype=DT)
    svgp = SVGP(Z, batch_shape=torch.Size([h])).to(DT)
    randomize(svgp, 1)
    layer = OneLayer(Z, output_dims=h).to(DT)
    layer.load_state_dict(svgp.state_dict())
    with torchgp.settings.num_likelihood_samples(2):
        out = layer(X)
    ref = svgp(X.unsqueeze(0).expand(h, *X.shape))
    assert isinstance(out, torchgp.distributions.MultitaskMultivariateNormal)
    assert out.batch_shape == (2,) and out.event_shape == (7, h)
    for k in range(h):
        assert_close(out.mean[1, :, k], ref.mean[k])
        assert_close(out.variance[0, :, k], ref.variance[k])
    # tasks are independent: in GPyTorch's interleaved order (row i h + k) task k's rows are k, k + h, ...
    C = out.covariance_matrix[0]
    assert_close(C[0::h, 1::h], torch.zeros(7, 7, dtype=DT))
    assert_close(C[1::h, 1::h], ref.covariance_matrix[1])


def test_samples_propagate_per_sample():
    # layer(samples, are_samples=True) is, for each sample s, the layer at that sample's inputs
    torch.manual_seed(2)
    layer = layer_class(torchgp)(2, 3).to(DT)
    randomize(layer, 2)
    samples = torch.randn(4, 5, 2, dtype=DT)
    out = layer(samples, are_samples=True)
    assert out.batch_shape == (4,) and out.event_shape == (5, 3)
    for s in range(4):
        one = layer(samples[s])  # deterministic input: expanded to S copies
        assert_close(out.mean[s], one.mean[0])
        assert_close(out.variance[s], one.variance[-1])
    # a multitask input is sampled once per entry from its marginals (Salimbeni & Deisenroth eq. 13)
    nxt = layer_class(torchgp)(3, None).to(DT)
    torch.manual_seed(5)
    got = nxt(out)
    torch.manual_seed(5)
    f = out.mean + out.variance.sqrt() * torch.randn(out.mean.shape, dtype=DT)
    want = nxt(f, are_samples=True)
    assert got.batch_shape == (4,) and got.event_shape == (5,)
    assert_close(got.mean, want.mean)


def _copy_to_gpytorch(model_tg, d, hidden):
    torch.manual_seed(0)
    model_gp = deep_gp_class(gpytorch)(d, hidden).to(DT)
    model_gp.load_state_dict(model_tg.state_dict())
    return model_gp


@pytest.mark.parametrize("num_samples", [1, 3])
def test_elbo_and_predictions_match_gpytorch(num_samples):
    # same parameters, same seed: the samples drawn between layers are the same draws in both libraries
    X, y = toy_data(n=9, d=2, seed=3)
    torch.manual_seed(0)
    model = deep_gp_class(torchgp)(2, 2).to(DT)
    randomize(model, 3)
    model.likelihood.noise = 0.1
    ref = _copy_to_gpytorch(model, 2, 2)
    mll = DeepApproximateMLL(VariationalELBO(model.likelihood, model, num_data=20))
    mll_ref = gpytorch.mlls.DeepApproximateMLL(gpytorch.mlls.VariationalELBO(ref.likelihood, ref, num_data=20))
    with torchgp.settings.num_likelihood_samples(num_samples), gpytorch.settings.num_likelihood_samples(num_samples):
        torch.manual_seed(11)
        out = model(X)
        loss = mll(out, y)
        torch.manual_seed(11)
        out_ref = ref(X)
        loss_ref = mll_ref(out_ref, y)
        assert out.batch_shape == out_ref.batch_shape == (num_samples,)
        assert_close(out.mean, out_ref.mean.detach())
        assert_close(loss, loss_ref.detach())
        loss.backward()
        loss_ref.backward()
    for (name, p), (name_ref, p_ref) in zip(model.named_parameters(), ref.named_parameters()):
        assert name == name_ref
        assert_close(p.grad, p_ref.grad, loose=10)
    # the KL is the sum of both layers' KLs
    kl = model.variational_strategy.kl_divergence()
    assert_close(kl, ref.variational_strategy.kl_divergence().detach(), loose=1e3)
    assert_close(
        kl, sum(layer.variational_strategy.kl_divergence().sum() for layer in (model.hidden_layer, model.last_layer))
    )


def test_tutorial_shapes():
    # GPyTorch's deep GP tutorial, tiny: shapes of the outputs, predictions and log marginals
    X, y = toy_data(n=10, d=3, seed=4)
    torch.manual_seed(0)
    model = deep_gp_class(torchgp)(3, hidden=2).to(DT)
    mll = DeepApproximateMLL(VariationalELBO(model.likelihood, model, num_data=10))
    with torchgp.settings.num_likelihood_samples(5):
        hidden = model.hidden_layer(X)
        assert hidden.batch_shape == (5,) and hidden.event_shape == (10, 2) and hidden.mean.shape == (5, 10, 2)
        out = model(X)
        assert out.batch_shape == (5,) and out.event_shape == (10,)
        loss = -mll(out, y)
        assert loss.shape == ()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        model.eval()
        with torch.no_grad():
            preds = model.likelihood(model(X))
            lls = model.likelihood.log_marginal(y, model(X))
        assert preds.mean.shape == preds.variance.shape == lls.shape == (5, 10)
        # skip connection: the last layer also sees the raw inputs
        layer = layer_class(torchgp)(2 + 3, None).to(DT)
        skip = layer(hidden, X)
        assert skip.batch_shape == (5,) and skip.event_shape == (10,)


def test_two_layer_deep_gp_trains():
    X, y = toy_data(n=30, d=1, seed=5)
    torch.manual_seed(0)
    model = deep_gp_class(torchgp)(1, hidden=2).to(DT)
    mll = DeepApproximateMLL(VariationalELBO(model.likelihood, model, num_data=30))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    with torchgp.settings.num_likelihood_samples(4):
        for _ in range(80):
            opt.zero_grad()
            loss = -mll(model(X), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        model.eval()
        with torch.no_grad(), torchgp.settings.num_likelihood_samples(16):
            mean = model.likelihood(model(X)).mean.mean(0)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.2
    rmse = (mean - y).pow(2).mean().sqrt()
    assert rmse < 0.6 * y.std()


def test_gradcheck_through_sampling():
    # reparameterised gradients through the samples passed between layers (fixed seed inside)
    X, y = toy_data(n=4, d=1, seed=6)
    torch.manual_seed(0)
    model = deep_gp_class(torchgp)(1, hidden=2, num_inducing=3).to(DT)
    randomize(model, 6)
    mll = DeepApproximateMLL(VariationalELBO(model.likelihood, model, num_data=4))
    vm = model.hidden_layer.variational_strategy._variational_distribution.variational_mean

    def f(mean):
        with torch.no_grad():
            vm.copy_(mean.detach())
        torch.manual_seed(3)
        with torchgp.settings.num_likelihood_samples(2):
            val = mll(model(X), y)
        (g,) = torch.autograd.grad(val, vm, create_graph=False)
        return val.detach(), g

    m0 = vm.detach().clone()
    _, grad = f(m0)
    eps = 1e-6
    for idx in [(0, 0), (1, 2), (0, 1)]:
        e = torch.zeros_like(m0)
        e[idx] = eps
        fd = (f(m0 + e)[0] - f(m0 - e)[0]) / (2 * eps)
        assert_close(grad[idx], fd, loose=1e3)


def test_errors_and_deprecated_names():
    X, y = toy_data(n=5, d=2)
    layer = layer_class(torchgp)(3, 2).to(DT)
    with pytest.raises(ShapeError, match="input_dims = 3"):
        layer(X)
    model = OneLayerDeepGP(OneLayer(X[:3].clone()).to(DT))
    lik = torchgp.likelihoods.GaussianLikelihood().to(DT)
    with pytest.raises(InputError, match="combine_terms"):
        DeepApproximateMLL(VariationalELBO(lik, model, num_data=5, combine_terms=False))
    with pytest.warns(DeprecationWarning, match="DeepApproximateMLL"):
        deep_lik = DeepLikelihood(lik)
    with torchgp.settings.num_likelihood_samples(3):
        out = model(X)
    assert_close(deep_lik.expected_log_prob(y, out), lik.expected_log_prob(y, out).mean(0))
    assert_close(deep_lik.log_marginal(y, out), lik.log_marginal(y, out).mean(0))
    assert_close(deep_lik(out).mean, lik(out).mean)
    with pytest.warns(DeprecationWarning, match="DeepGP"):
        AbstractDeepGP()
    Z = torch.rand(3, 2, dtype=DT)
    q = torchgp.variational.CholeskyVariationalDistribution(3)
    with pytest.warns(DeprecationWarning, match="DeepGPLayer"):
        AbstractDeepGPLayer(torchgp.variational.VariationalStrategy(None, Z, q), 2, None)
    with pytest.raises(ModelTypeError, match="no DeepGPLayer"):
        DeepGP().variational_strategy.kl_divergence()


def test_multitask_deep_gp_matches_gpytorch():
    # a last layer of t GPs gives a multitask output for a multitask likelihood, as in GPyTorch's multitask DGP
    model, ref = multitask_deep_gp(torchgp), multitask_deep_gp(gpytorch)
    randomize(model, 7)
    ref.load_state_dict(model.state_dict())
    X = torch.linspace(-1, 1, 7, dtype=DT).unsqueeze(-1)
    y = torch.stack([X[:, 0].sin(), X[:, 0].cos()], -1)
    with torchgp.settings.num_likelihood_samples(3), gpytorch.settings.num_likelihood_samples(3):
        outs = []
        for m in (model, ref):
            torch.manual_seed(4)
            out = m(X)
            outs.append((out, m.likelihood.expected_log_prob(y, out), m.likelihood(out)))
    (out, elp, pred), (out_ref, elp_ref, pred_ref) = outs
    assert isinstance(out, torchgp.distributions.MultitaskMultivariateNormal)
    assert out.batch_shape == (3,) and out.event_shape == (7, 2)
    assert_close(out.mean, out_ref.mean.detach())
    assert_close(out.variance, out_ref.variance.detach())
    assert elp.shape == (3, 7)
    assert_close(elp, elp_ref.detach())
    assert_close(pred.variance, pred_ref.variance.detach())


def test_sample_copies_share_one_lazy_covariance():
    # the S copies at deterministic inputs: entries, diagonal and products equal the dense expansion
    torch.manual_seed(8)
    layer = layer_class(torchgp)(2, 3).to(DT)
    randomize(layer, 8)
    X, _ = toy_data(n=5, d=2, seed=8)
    with torchgp.settings.num_likelihood_samples(4):
        out = layer(X)
    cov = out.lazy_covariance_matrix
    single = layer._marginals(X).covariance_matrix  # (15, 15)
    dense = single.expand(4, 15, 15)
    assert cov.shape == (4, 15, 15)
    assert_close(cov.to_dense(), dense)
    assert_close(cov.diagonal(), dense.diagonal(dim1=-2, dim2=-1))
    rhs = torch.randn(4, 15, 2, dtype=DT)
    assert_close(cov.matmul(rhs), dense @ rhs)
    assert_close(cov.detach().to_dense(), dense)
    assert_close(cov.expand(2, 4, 15, 15).to_dense(), dense.expand(2, 4, 15, 15))
