"""
Fit an exact GP
===============

A GPyTorch-style exact GP, fitted in one call with ``torchgp.fit``, checked, saved and loaded, and its
posterior plotted. Run::

    python examples/fit_exact_gp.py [--small] [--out DIR]
"""

import argparse
import os
import tempfile

import torch

import torchgp as gpytorch


class ExactGPModel(gpytorch.models.ExactGP):
    def __init__(self, train_x, train_y, likelihood):
        super().__init__(train_x, train_y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="fewer points (for CI)")
    parser.add_argument("--out", default=None, help="folder for the saved model and plot (default: a temp folder)")
    args = parser.parse_args(argv)
    out = args.out or tempfile.mkdtemp()
    torch.manual_seed(0)
    n = 30 if args.small else 200
    train_x = torch.linspace(0, 1, n, dtype=torch.float64)
    train_y = torch.sin(2 * torch.pi * train_x) + 0.2 * torch.randn(n, dtype=torch.float64)

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = ExactGPModel(train_x, train_y, likelihood).double()
    print(gpytorch.check_kernel(model.covar_module))  # symmetric, PSD, diag, batch, gradients

    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    result = gpytorch.fit(mll, restarts=2, seed=0)  # L-BFGS-B on the raw parameters
    print(result)
    print("noise", likelihood.noise.item(), "lengthscale", model.covar_module.base_kernel.lengthscale.item())

    path = os.path.join(out, "model.safetensors")
    gpytorch.save(model, path)
    restored = gpytorch.load(path, model=ExactGPModel(train_x, train_y, gpytorch.likelihoods.GaussianLikelihood()))
    model.eval()
    restored.eval()
    test_x = torch.linspace(0, 1, 51, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model(test_x).mean, restored(test_x).mean)
    try:
        from torchgp.plot import plot_posterior_1d

        plot_posterior_1d(model, likelihood=likelihood, path=os.path.join(out, "posterior.png"))
        print("plot written to", os.path.join(out, "posterior.png"))
    except ImportError:
        print("matplotlib not installed: no plot")


if __name__ == "__main__":
    main()
