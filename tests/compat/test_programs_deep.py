"""GPyTorch's deep-GP tutorial program, run by GPyTorch 1.15 and by torchgp: same numbers.

The layers' samples are ``rsample`` draws: both libraries draw the same standard normals in the same order, so
from the same seed the Monte Carlo estimates agree too.
"""

from __future__ import annotations

import torch

from tests.compat._harness import assert_same, run_both


def _deep_gp(gp, d_in, hidden):
    class Layer(gp.models.deep_gps.DeepGPLayer):
        def __init__(self, input_dims, output_dims, num_inducing=8):
            batch = torch.Size([]) if output_dims is None else torch.Size([output_dims])
            z = torch.rand(*batch, num_inducing, input_dims, dtype=torch.float64)
            q = gp.variational.CholeskyVariationalDistribution(num_inducing, batch_shape=batch)
            vs = gp.variational.VariationalStrategy(self, z, q, learn_inducing_locations=True)
            super().__init__(vs, input_dims, output_dims)
            self.mean_module = gp.means.LinearMean(input_dims) if output_dims else gp.means.ConstantMean()
            self.covar_module = gp.kernels.ScaleKernel(
                gp.kernels.RBFKernel(batch_shape=batch, ard_num_dims=input_dims), batch_shape=batch
            )

        def forward(self, x):
            return gp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    class DeepGP(gp.models.deep_gps.DeepGP):
        def __init__(self):
            super().__init__()
            self.hidden = Layer(d_in, hidden)
            self.last = Layer(hidden, None)
            self.likelihood = gp.likelihoods.GaussianLikelihood()

        def forward(self, x):
            return self.last(self.hidden(x))

    return DeepGP().double()


def test_two_layer_deep_gp():
    def program(gp, share):
        x = torch.rand(50, 2, dtype=torch.float64)
        y = torch.sin(4 * x).sum(-1) + 0.1 * torch.randn(50, dtype=torch.float64)
        model = _deep_gp(gp, 2, 2)
        share(model)
        mll = gp.mlls.DeepApproximateMLL(gp.mlls.VariationalELBO(model.likelihood, model, num_data=50))
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        model.train()
        losses = []
        with gp.settings.num_likelihood_samples(4):
            for _ in range(5):
                opt.zero_grad()
                loss = -mll(model(x), y)
                loss.backward()
                opt.step()
                losses.append(loss.detach())
            model.eval()
            with torch.no_grad():
                pred = model.likelihood(model(torch.rand(6, 2, dtype=torch.float64)))
        return {"loss": torch.stack(losses), "mean": pred.mean, "var": pred.variance}

    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-6, atol=1e-8)
