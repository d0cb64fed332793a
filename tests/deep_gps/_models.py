"""Deep GP models written once against GPyTorch's API, built from torchgp or from GPyTorch itself."""

from __future__ import annotations

import torch

import torchgp


def layer_class(lib):
    """GPyTorch's deep GP tutorial layer (``input_dims``, ``output_dims``, ``mean_type``, skip inputs) in ``lib``."""

    class TutorialLayer(lib.models.deep_gps.DeepGPLayer):
        def __init__(self, input_dims, output_dims, num_inducing=6, mean_type="constant"):
            batch_shape = torch.Size([]) if output_dims is None else torch.Size([output_dims])
            Z = torch.randn(*batch_shape, num_inducing, input_dims)
            q = lib.variational.CholeskyVariationalDistribution(num_inducing, batch_shape=batch_shape)
            strategy = lib.variational.VariationalStrategy(self, Z, q, learn_inducing_locations=True)
            super().__init__(strategy, input_dims, output_dims)
            if mean_type == "constant":
                self.mean_module = lib.means.ConstantMean(batch_shape=batch_shape)
            else:
                self.mean_module = lib.means.LinearMean(input_dims, batch_shape=batch_shape)
            self.covar_module = lib.kernels.ScaleKernel(
                lib.kernels.RBFKernel(batch_shape=batch_shape, ard_num_dims=input_dims), batch_shape=batch_shape
            )

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

        def __call__(self, x, *other_inputs, **kwargs):
            # the tutorial's skip connections: extra inputs are concatenated to samples of x
            if other_inputs:
                if isinstance(x, lib.distributions.MultitaskMultivariateNormal):
                    x = x.rsample()
                S = lib.settings.num_likelihood_samples.value()
                extra = [inp.unsqueeze(0).expand(S, *inp.shape) for inp in other_inputs]
                x = torch.cat([x, *extra], dim=-1)
            are_samples = kwargs.pop("are_samples", False) or bool(other_inputs)
            return super().__call__(x, are_samples=are_samples, **kwargs)

    return TutorialLayer


def deep_gp_class(lib):
    """A two-layer deep GP (hidden layer of ``hidden`` GPs, one output GP) with a Gaussian likelihood."""
    Layer = layer_class(lib)

    class TwoLayerDeepGP(lib.models.deep_gps.DeepGP):
        def __init__(self, d, hidden=2, num_inducing=6):
            super().__init__()
            self.hidden_layer = Layer(d, hidden, num_inducing, mean_type="linear")
            self.last_layer = Layer(hidden, None, num_inducing, mean_type="constant")
            self.likelihood = lib.likelihoods.GaussianLikelihood()

        def forward(self, x):
            return self.last_layer(self.hidden_layer(x))

    return TwoLayerDeepGP


def randomize(model, generator_seed: int = 0, scale: float = 0.3) -> None:
    """Give every variational parameter a random value (so a comparison is not at the initial point)."""
    g = torch.Generator().manual_seed(generator_seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "variational_mean" in name or "chol_variational_covar" in name:
                noise = torch.randn(p.shape, generator=g, dtype=p.dtype) * scale
                if "chol" in name:
                    noise = noise.tril()
                p.add_(noise)
        for name, b in model.named_buffers():
            if name.endswith("variational_params_initialized"):
                b.fill_(1)


def dspp_classes(lib, Q):
    """A two-layer DSPP (GPyTorch's DSPP tutorial architecture, tiny) in ``lib``: ``(layer class, model class)``."""

    class Layer(lib.models.deep_gps.dspp.DSPPLayer):
        def __init__(self, input_dims, output_dims, num_inducing=5):
            batch_shape = torch.Size([]) if output_dims is None else torch.Size([output_dims])
            Z = torch.randn(*batch_shape, num_inducing, input_dims)
            q = lib.variational.CholeskyVariationalDistribution(num_inducing, batch_shape=batch_shape)
            strategy = lib.variational.VariationalStrategy(self, Z, q, learn_inducing_locations=True)
            super().__init__(strategy, input_dims, output_dims, num_quad_sites=Q)
            self.mean_module = lib.means.ConstantMean(batch_shape=batch_shape)
            self.covar_module = lib.kernels.ScaleKernel(
                lib.kernels.RBFKernel(batch_shape=batch_shape, ard_num_dims=input_dims), batch_shape=batch_shape
            )

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    class TwoLayerDSPP(lib.models.deep_gps.dspp.DSPP):
        def __init__(self, d, hidden=2):
            super().__init__(Q)
            self.hidden_layer = Layer(d, hidden)
            self.last_layer = Layer(hidden, None)
            self.likelihood = lib.likelihoods.GaussianLikelihood()

        def forward(self, x):
            return self.last_layer(self.hidden_layer(x))

    return Layer, TwoLayerDSPP


DT = torch.float64


def toy_data(n: int, d: int = 1, seed: int = 0):
    """``X (n, d)`` uniform on [-2, 2]^d and ``y (n,)`` = sin(2 Σ x) plus noise of sd 0.1, float64."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=DT) * 4 - 2
    y = torch.sin(2 * X.sum(-1)) + 0.1 * torch.randn(n, generator=g, dtype=DT)
    return X, y


def _svgp_modules(layer, batch_shape=torch.Size([])):
    """The mean and kernel of ``tests/variational/_helpers.SVGP`` (same parameter names) on ``layer``."""
    layer.mean_module = torchgp.means.ConstantMean(batch_shape=batch_shape)
    layer.covar_module = torchgp.kernels.ScaleKernel(
        torchgp.kernels.RBFKernel(batch_shape=batch_shape), batch_shape=batch_shape
    )


class OneLayer(torchgp.models.deep_gps.DeepGPLayer):
    """The SVGP of ``tests/variational/_helpers.py`` as a deep GP layer (same parameter names)."""

    def __init__(self, Z, output_dims=None):
        batch_shape = torch.Size([]) if output_dims is None else torch.Size([output_dims])
        q = torchgp.variational.CholeskyVariationalDistribution(Z.shape[-2], batch_shape=batch_shape)
        super().__init__(torchgp.variational.VariationalStrategy(self, Z, q), Z.shape[-1], output_dims)
        _svgp_modules(self, batch_shape)

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class OneDSPPLayer(torchgp.models.deep_gps.dspp.DSPPLayer):
    """The same SVGP as a DSPP layer with ``num_quad_sites`` quadrature sites."""

    def __init__(self, Z, num_quad_sites=1):
        q = torchgp.variational.CholeskyVariationalDistribution(Z.shape[-2])
        super().__init__(torchgp.variational.VariationalStrategy(self, Z, q), Z.shape[-1], None, num_quad_sites)
        _svgp_modules(self)

    def forward(self, x):
        return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class OneLayerDeepGP(torchgp.models.deep_gps.DeepGP):
    """A deep GP of one layer: its output is the layer's."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


class OneLayerDSPP(torchgp.models.deep_gps.dspp.DSPP):
    """A DSPP of one DSPP layer, with the layer's quadrature sites."""

    def __init__(self, layer):
        super().__init__(layer.num_quad_sites)
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


def multitask_deep_gp(lib, d=1, hidden=2, tasks=2, num_inducing=5, last_mean="constant"):
    """Hidden layer of ``hidden`` GPs, last layer of ``tasks`` GPs, multitask Gaussian likelihood, float64, seed 0."""
    Layer = layer_class(lib)

    class MultitaskDeepGP(lib.models.deep_gps.DeepGP):
        def __init__(self):
            super().__init__()
            self.hidden_layer = Layer(d, hidden, num_inducing, mean_type="linear")
            self.last_layer = Layer(hidden, tasks, num_inducing, mean_type=last_mean)
            self.likelihood = lib.likelihoods.MultitaskGaussianLikelihood(num_tasks=tasks)

        def forward(self, x):
            return self.last_layer(self.hidden_layer(x))

    torch.manual_seed(0)
    return MultitaskDeepGP().to(DT)
