import torch

import torchgp
from torchgp import plot
from torchgp.io import ExactGPModel
from torchgp.optim.fit import fit


def test_plots_write_files(tmp_path):
    X = torch.rand(20, 1, dtype=torch.float64)
    model = ExactGPModel(X, torch.sin(6 * X[:, 0]), kernel="rbf").double()
    result = fit(torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model), maxiter=20, progress=False)
    fig = plot.plot_posterior_1d(model, likelihood=model.likelihood, path=tmp_path / "a.png")
    assert len(fig.axes[0].lines) >= 4  # mean, 3 samples, data
    plot.plot_training(result, path=tmp_path / "b.png")
    X2 = torch.rand(25, 2, dtype=torch.float64)
    model2 = ExactGPModel(X2, X2.sum(-1), kernel="rbf").double().eval()
    plot.plot_posterior_2d(model2, resolution=10, path=tmp_path / "c.png")
    plot.plot_predicted_vs_observed(torch.zeros(5), torch.ones(5), torch.arange(5.0), path=tmp_path / "d.png")
    assert all((tmp_path / f"{n}.png").stat().st_size > 1000 for n in "abcd")
