"""
Deep kernel learning
====================

A ``torch.nn`` feature extractor feeding an exact GP, trained jointly on the marginal likelihood
(Wilson et al. 2016): ``k(x, x') = k_RBF(g(x), g(x'))`` with ``g`` a small multilayer perceptron whose
outputs ``utils.grid.ScaleToBounds`` keeps in ``[-1, 1]``. On scikit-learn's bundled diabetes data
(442 patients, 10 features; no download), the test RMSE is printed next to a plain exact GP with one
lengthscale per input. Run::

    python examples/deep_kernel_learning.py [--small] [--out DIR]
"""

import argparse
import time

import torch
from sklearn.datasets import load_diabetes

import torchgp as gpytorch


class FeatureExtractor(torch.nn.Sequential):
    """``g``: 10 inputs → 2 features."""

    def __init__(self, d, width=32, features=2):
        super().__init__(
            torch.nn.Linear(d, width),
            torch.nn.ReLU(),
            torch.nn.Linear(width, features),
        )


class DKLModel(gpytorch.models.ExactGP):
    def __init__(self, train_x, train_y, likelihood, features=2):
        super().__init__(train_x, train_y, likelihood)
        self.feature_extractor = FeatureExtractor(train_x.shape[-1], features=features)
        self.scale_to_bounds = gpytorch.utils.grid.ScaleToBounds(-1.0, 1.0)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=features))

    def forward(self, x):
        z = self.scale_to_bounds(self.feature_extractor(x))  # g(x), rescaled into [-0.95, 0.95]
        return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))


class PlainGP(gpytorch.models.ExactGP):
    def __init__(self, train_x, train_y, likelihood):
        super().__init__(train_x, train_y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=train_x.shape[-1]))

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def train(model, iterations, lr, weight_decay=1.0):
    """Adam on every parameter (network weights and GP hyperparameters together) against -log p(y | X).

    The network's weights get weight decay: a deep kernel maximising the marginal likelihood alone
    overfits small data sets (Ober, Rasmussen & van der Wilk 2021), which the decay holds back.
    """
    model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    network = [p for n, p in model.named_parameters() if n.startswith("feature_extractor.")]
    gp = [p for n, p in model.named_parameters() if not n.startswith("feature_extractor.")]
    groups = [{"params": gp}] + ([{"params": network, "weight_decay": weight_decay}] if network else [])
    optimizer = torch.optim.Adam(groups, lr=lr)
    for _ in range(iterations):
        optimizer.zero_grad()
        loss = -mll(model(*model.train_inputs), model.train_targets)
        loss.backward()
        optimizer.step()
    return loss.item()


def rmse(model, x, y):
    model.eval()
    with torch.no_grad():
        mean = model.likelihood(model(x)).mean
    return (mean - y).pow(2).mean().sqrt().item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="fewer iterations (for CI)")
    parser.add_argument("--out", default=None, help="unused; accepted like the other examples")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    X, y = (torch.as_tensor(a, dtype=torch.float64) for a in load_diabetes(return_X_y=True))
    perm = torch.randperm(X.shape[0])
    train_idx, test_idx = perm[:350], perm[350:]
    mu, sd = X[train_idx].mean(0), X[train_idx].std(0)
    X = (X - mu) / sd  # standardise inputs and targets on the training split
    y_mu, y_sd = y[train_idx].mean(), y[train_idx].std()
    y = (y - y_mu) / y_sd
    iterations = 40 if args.small else 100

    results = {}
    for name, cls in (("deep kernel", DKLModel), ("plain exact GP", PlainGP)):
        torch.manual_seed(0)
        model = cls(X[train_idx], y[train_idx], gpytorch.likelihoods.GaussianLikelihood()).double()
        start = time.perf_counter()
        loss = train(model, iterations, lr=0.05)
        seconds = time.perf_counter() - start
        # RMSE in the targets' units (disease progression score)
        results[name] = rmse(model, X[test_idx], y[test_idx]) * y_sd.item()
        print(
            f"{name:15s} -mll/n {loss:.3f}  test RMSE {results[name]:.2f}  ({iterations} Adam steps, {seconds:.1f} s)"
        )
    print(f"RMSE ratio deep kernel / plain: {results['deep kernel'] / results['plain exact GP']:.3f}")


if __name__ == "__main__":
    main()
