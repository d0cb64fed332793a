import torch

import torchgp


def test_exact_gp_fits_sine():
    torch.manual_seed(0)
    X = torch.linspace(-3, 3, 40, dtype=torch.float64).unsqueeze(-1)
    y = torch.sin(X).squeeze(-1) + 0.1 * torch.randn(40, dtype=torch.float64)

    class Model(torchgp.models.ExactGP):
        def __init__(self, X, y, lik):
            super().__init__(X, y, lik)
            self.mean_module = torchgp.means.ConstantMean()
            self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel())

        def forward(self, x):
            return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    lik = torchgp.likelihoods.GaussianLikelihood()
    model = Model(X, y, lik).double()
    mll = torchgp.mlls.ExactMarginalLogLikelihood(lik, model)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(50):
        opt.zero_grad()
        loss = -mll(model(X), y)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(X)
    assert (pred.mean - torch.sin(X).squeeze(-1)).abs().max() < 0.2
