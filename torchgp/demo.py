r"""The ``torchgp demo`` job: the Mauna Loa CO2 record, fitted and extrapolated by an exact GP.

Monthly means of the weekly record (1958–2001) are fitted up to the end of 1994 with the full
kernel of Rasmussen & Williams (2006, §5.4.3, eq. 5.19): a long-term smooth trend, a seasonal
component that may drift, medium-term irregularities, and correlated noise,

.. math:: k = s_1\,\mathrm{RBF}_{\ell_1} + s_2\,\mathrm{Periodic}_{p,\ell_2}\cdot\mathrm{RBF}_{\ell_3}
          + s_3\,\mathrm{RQ}_{\ell_4,\alpha} + s_4\,\mathrm{RBF}_{\ell_5} \;(+\ \sigma^2 \text{ white noise}),

and 1995–2001 is held out to measure RMSE, NLPD and the coverage of the 95% interval.

Choices, made from the structure of the problem and the training data only (no number was tuned on
the held-out years):

- The fourth term (R&W's ``k_4``): month-to-month deviations of the record are correlated (weather,
  sampling), which a white-noise likelihood alone cannot express. Without it the RQ term is pulled
  to explain them, its α collapses towards 0 (a heavy-tailed mixture of lengthscales, ~3e-4) and the
  extrapolation is over-confident (73% coverage of the 95% interval). Its lengthscale is constrained
  to [1 week, 1 year] (``Interval(1/52, 1)``), so it stays a short-range noise term and cannot take
  over the medium-term or seasonal structure; it starts at a quarter year with a small scale (1e-3
  of the standardised variance, the same as the noise).
- The RQ shape α is constrained to α ≥ 0.1 (``GreaterThan(0.1)``): below that the RQ kernel is a
  near-improper scale mixture that extrapolates as if all lengthscales were plausible.
- A constant mean on standardised targets: the long-term RBF carries the trend (a linear mean,
  tried from the same starting values, ended at a much lower training marginal likelihood).

With these, the marginal likelihood's optimum is close to R&W's (RQ α ≈ 0.8, ℓ₄ ≈ 1.2 years,
correlated-noise lengthscale ≈ 1.5 months), held-out RMSE falls from 1.5 to 1.05 ppm, NLPD from
1.94 to 1.26, and coverage of the 95% interval rises from 73% to 100% (84 held-out months).
"""

from __future__ import annotations

import math
import os
import time

import torch

from torchgp.constraints import GreaterThan, Interval
from torchgp.datasets import load_co2
from torchgp.io import ExactGPModel, save
from torchgp.kernels import Kernel, PeriodicKernel, RBFKernel, RQKernel, ScaleKernel
from torchgp.likelihoods import GaussianLikelihood
from torchgp.mlls import ExactMarginalLogLikelihood
from torchgp.optim.fit import fit

__all__ = ["run_demo", "co2_kernel", "monthly_means", "predictive_metrics"]

T0 = 1958.0  # inputs are years since 1958


def monthly_means(year: torch.Tensor, ppm: torch.Tensor, step: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the weekly record by calendar month (then keep every ``step``-th month).

    Returns:
        ``(t (m,), ppm (m,))`` with ``t`` the month's mean decimal year.
    """
    month = torch.floor(year * 12).long()
    keys, index = torch.unique(month, return_inverse=True)
    count = torch.zeros(len(keys), dtype=year.dtype).index_add_(0, index, torch.ones_like(year))
    t = torch.zeros(len(keys), dtype=year.dtype).index_add_(0, index, year) / count
    y = torch.zeros(len(keys), dtype=ppm.dtype).index_add_(0, index, ppm) / count
    return t[::step], y[::step]


def co2_kernel() -> Kernel:
    """The R&W §5.4.3 kernel (four terms) with starting values in years and standardised ppm.

    The RQ shape is constrained to α ≥ 0.1 and the correlated-noise lengthscale to [1/52, 1] years
    (see the module docstring for why).
    """
    trend = ScaleKernel(RBFKernel())
    trend.base_kernel.lengthscale = 50.0
    trend.outputscale = 1.0
    seasonal = ScaleKernel(PeriodicKernel() * RBFKernel())
    seasonal.base_kernel.kernels[0].period_length = 1.0
    seasonal.base_kernel.kernels[0].lengthscale = 1.0
    seasonal.base_kernel.kernels[1].lengthscale = 100.0
    seasonal.outputscale = 0.05
    irregular = ScaleKernel(RQKernel(alpha_constraint=GreaterThan(0.1)))
    irregular.base_kernel.lengthscale = 1.0
    irregular.base_kernel.alpha = 1.0
    irregular.outputscale = 0.005
    # R&W's k_4: short-range correlated noise, from a week to a year
    correlated_noise = ScaleKernel(RBFKernel(lengthscale_constraint=Interval(1 / 52, 1.0)))
    correlated_noise.base_kernel.lengthscale = 0.25
    correlated_noise.outputscale = 1e-3
    return trend + seasonal + irregular + correlated_noise


def predictive_metrics(mean: torch.Tensor, std: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """RMSE, mean negative log predictive density (Gaussian) and coverage of the 95% interval.

    Shapes:
        ``mean, std, y (t,)``, all in the same units.
    """
    mean, std, y = mean.detach(), std.detach(), y.detach()
    z = (y - mean) / std
    nlpd = (0.5 * z.pow(2) + torch.log(std) + 0.5 * math.log(2 * math.pi)).mean()
    return {
        "rmse": float((y - mean).pow(2).mean().sqrt()),
        "nlpd": float(nlpd),
        "coverage95": float((z.abs() <= 1.959964).to(y.dtype).mean()),
    }


def hyperparameter_lines(model) -> list[str]:
    """``name = value`` for every constrained hyperparameter (constrained values)."""
    lines = []
    for prefix, module in model.named_modules():
        for name in getattr(module, "_constrained", {}):
            value = getattr(module, name).detach().reshape(-1)
            shown = ", ".join(f"{v:.4g}" for v in value.tolist()[:8]) + (" ..." if value.numel() > 8 else "")
            lines.append(f"{prefix + '.' if prefix else ''}{name} = {shown}")
    return lines


def run_demo(
    out: str | os.PathLike = "torchgp-demo",
    plot: bool = True,
    quick: bool = False,
    progress: bool | None = None,
    echo=print,
) -> dict:
    """Fit the CO2 model, report, plot and save it.

    Args:
        out: output folder (created): ``co2_model.safetensors``, ``co2.png``.
        plot: write the plot (needs matplotlib).
        quick: every 2nd month and at most 60 optimiser iterations (a smoke run of a few seconds).
        progress: progress bar (default: when stderr is a terminal).
        echo: where the report lines go.

    Returns:
        A dict of the numbers printed (``rmse``, ``nlpd``, ``coverage95``, ``train_mll``, ``seconds``, paths).
    """
    # n ≈ 440: one thread is as fast as several and immune to oversubscription on busy machines
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(out, plot, quick, progress, echo)
    finally:
        torch.set_num_threads(threads)


def _run(out, plot, quick, progress, echo) -> dict:
    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    year, ppm = load_co2(torch.float64)
    t, y = monthly_means(year, ppm, step=2 if quick else 1)
    train = t < 1995.0
    x_train, x_test = t[train] - T0, t[~train] - T0
    y_mean, y_std = float(y[train].mean()), float(y[train].std())
    y_train = (y[train] - y_mean) / y_std
    likelihood = GaussianLikelihood().double()
    likelihood.noise = 1e-3
    model = ExactGPModel(x_train, y_train, likelihood, kernel=co2_kernel(), mean="constant").double()
    mll = ExactMarginalLogLikelihood(likelihood, model)
    echo(f"Mauna Loa CO2: {len(x_train)} monthly means 1958-1994 for training, {len(x_test)} (1995-2001) held out.")
    result = fit(mll, maxiter=60 if quick else 300, progress=progress)
    model.train()
    with torch.no_grad():
        train_mll = float(mll(model(x_train.unsqueeze(-1)), y_train)) * len(x_train)
    model.eval()
    with torch.no_grad():
        pred = likelihood(model(x_test.unsqueeze(-1)))
        mean = pred.mean.detach() * y_std + y_mean
        std = pred.variance.detach().sqrt() * y_std
    metrics = predictive_metrics(mean, std, y[~train])
    echo(f"fit: {result}")
    echo("learned hyperparameters (inputs in years since 1958, targets standardised):")
    for line in hyperparameter_lines(model):
        echo(f"  {line}")
    echo(f"training log marginal likelihood: {train_mll:.2f} ({train_mll / len(x_train):.4f} per point)")
    echo(
        f"test RMSE: {metrics['rmse']:.3f} ppm   test NLPD: {metrics['nlpd']:.3f}   "
        f"95% interval coverage: {100 * metrics['coverage95']:.1f}%"
    )
    model_path = os.path.join(out, "co2_model.safetensors")
    save(
        model,
        model_path,
        metadata={
            "x_offset": T0,
            "y_mean": y_mean,
            "y_std": y_std,
            "features": ["year"],
            "target": "co2",
            "x_mean": [T0],
            "x_std": [1.0],
        },
    )
    echo(f"model saved to {model_path}")
    plot_path = None
    if plot:
        try:
            from torchgp.plot import plot_posterior_1d

            plot_path = os.path.join(out, "co2.png")
            X = torch.linspace(0, 2002.0 - T0, 600, dtype=torch.float64)
            plot_posterior_1d(
                model,
                X,
                likelihood=likelihood,
                test_x=x_test,
                test_y=(y[~train] - y_mean) / y_std,
                num_samples=0,
                path=plot_path,
                x_transform=lambda v: v + T0,
                y_transform=lambda v, scale=False: v * y_std + y_mean,
                title=f"Mauna Loa CO2 (ppm): test RMSE {metrics['rmse']:.2f}, 95% coverage {100 * metrics['coverage95']:.0f}%",
            )
            echo(f"plot saved to {plot_path}")
        except ImportError as err:
            echo(f"(no plot: {err})")
    seconds = time.perf_counter() - start
    echo(f"done in {seconds:.1f} s")
    return {
        **metrics,
        "train_mll": train_mll,
        "seconds": seconds,
        "model": model_path,
        "plot": plot_path,
        "fit": result,
    }
