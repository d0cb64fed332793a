"""``settings.trace_mode`` and ``torch.jit.trace``: exported models predict what the eager model predicts.

GPyTorch's TorchScript recipe: predict once (building the caches), then trace a module returning the mean
and variance; the trace is saved and loaded without Python. Checked against the eager model at new inputs.
"""

from __future__ import annotations

import pytest
import torch

import torchgp
from torchgp import settings


class _Exact(torchgp.models.ExactGP):
    def __init__(self, x, y):
        super().__init__(x, y, torchgp.likelihoods.GaussianLikelihood())
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel())

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class _SVGP(torchgp.models.ApproximateGP):
    def __init__(self, z):
        q = torchgp.variational.CholeskyVariationalDistribution(z.shape[0])
        super().__init__(torchgp.variational.VariationalStrategy(self, z, q, learn_inducing_locations=True))
        self.mean_module = torchgp.means.ConstantMean()
        self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.MaternKernel(nu=2.5))

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class _MeanVar(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out.mean, out.variance


def _exact_model():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(30, 2, generator=g, dtype=torch.float64)
    model = _Exact(x, torch.sin(4 * x.sum(-1))).double()
    model.covar_module.base_kernel.lengthscale = 0.3
    model.likelihood.noise = 0.01
    return model.eval()


def _traced(model, fast: bool, tmp_path, use_setting: bool = True):
    x_trace = torch.linspace(0, 1, 10, dtype=model.train_inputs[0].dtype).unsqueeze(-1).expand(10, 2)
    with torch.no_grad(), settings.fast_pred_var(fast), settings.trace_mode(use_setting):
        model(x_trace)  # the caches, built before tracing, become constants of the trace
        traced = torch.jit.trace(_MeanVar(model), x_trace)  # check_trace: two traces must agree
    traced.save(str(tmp_path / "model.pt"))
    return torch.jit.load(str(tmp_path / "model.pt"))


@pytest.mark.parametrize("fast", [False, True])
def test_exact_gp_traces_saves_and_predicts_like_the_eager_model(fast, tmp_path):
    model = _exact_model()
    loaded = _traced(model, fast, tmp_path)
    x_new = torch.rand(7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mean, var = loaded(x_new)
    with torch.no_grad(), settings.fast_pred_var(fast):
        ref = model(x_new)
    torch.testing.assert_close(mean, ref.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, ref.variance, rtol=1e-10, atol=1e-12)


def test_tracing_works_without_the_setting_too(tmp_path):
    model = _exact_model()
    loaded = _traced(model, False, tmp_path, use_setting=False)
    x_new = torch.rand(4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        ref = model(x_new)
    torch.testing.assert_close(loaded(x_new)[0], ref.mean, rtol=1e-12, atol=1e-12)


def test_the_trace_keeps_its_state_and_the_eager_model_does_not_go_stale(tmp_path):
    model = _exact_model()
    loaded = _traced(model, True, tmp_path)
    x_new = torch.rand(5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    before = loaded(x_new)[0]
    model.covar_module.base_kernel.lengthscale = 0.6  # after tracing: the eager model must see it
    with torch.no_grad():
        eager = model(x_new).mean
    fresh = _exact_model()
    fresh.covar_module.base_kernel.lengthscale = 0.6
    with torch.no_grad():
        torch.testing.assert_close(eager, fresh(x_new).mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loaded(x_new)[0], before)  # the trace predicts from its own state
    assert (eager - before).abs().max() > 1e-3


def test_svgp_traces_saves_and_predicts_like_the_eager_model(tmp_path):
    torch.manual_seed(0)
    model = _SVGP(torch.rand(8, 2)).eval()
    x_trace = torch.rand(6, 2)
    with torch.no_grad(), settings.trace_mode():
        model(x_trace)
        traced = torch.jit.trace(_MeanVar(model), x_trace)
    traced.save(str(tmp_path / "svgp.pt"))
    loaded = torch.jit.load(str(tmp_path / "svgp.pt"))
    x_new = torch.rand(9, 2)
    with torch.no_grad():
        ref = model(x_new)
    mean, var = loaded(x_new)
    torch.testing.assert_close(mean, ref.mean)
    torch.testing.assert_close(var, ref.variance)


def test_trace_mode_turns_the_fused_kernel_node_off():
    assert settings.fused_kernels.on()
    with settings.trace_mode():
        assert not settings.fused_kernels.on() and settings.fused_kernels.off()
        x = torch.rand(5, 3, dtype=torch.float64, requires_grad=True)
        K = torchgp.kernels.RBFKernel().double()(x).to_dense()
        assert "StationaryCovariance" not in type(K.grad_fn).__name__
    with settings.fused_kernels(False):
        assert not settings.fused_kernels.on()
