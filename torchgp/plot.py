r"""Plots of GP fits (needs matplotlib, imported only when a function here is called).

* :func:`plot_posterior_1d`: posterior mean ± 2σ band, the data and a few posterior samples.
* :func:`plot_posterior_2d`: heat maps of the posterior mean and standard deviation.
* :func:`plot_training`: the loss curve from a :class:`~torchgp.optim.fit.FitResult`.
* :func:`plot_predicted_vs_observed`: predictions with 2σ error bars against the observed targets.

Each returns the matplotlib ``Figure`` and, given ``path``, also saves it.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["plot_posterior_1d", "plot_posterior_2d", "plot_training", "plot_predicted_vs_observed"]


def _pyplot():
    try:
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg") and not _has_display():
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "torchgp.plot needs matplotlib: pip install matplotlib (or pip install torchgp[plot])."
        ) from None
    return plt


def _has_display() -> bool:
    import os
    import sys

    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _finish(fig, path):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


class _Moments:
    """``mean``/``variance`` of a predictive given as a batch over likelihood samples ``(S, *batch, n)``."""

    def __init__(self, mean: torch.Tensor, variance: torch.Tensor):
        self.mean, self.variance = mean, variance


def _predict(model, X: torch.Tensor, likelihood=None):
    """Latent ``f`` and predictive ``y`` at ``X (n, d)``; ``y.mean``/``y.variance`` are ``(n,)``."""
    model.eval()
    with torch.no_grad():
        f = model(X)
        y = likelihood(f) if likelihood is not None else f
    n = f.mean.shape[-1]
    if y.mean.dim() > f.mean.dim() and y.mean.shape[-1] == n:
        # a non-Gaussian likelihood returns p(y | f_s) for samples f_s of f: law of total variance over s
        y = _Moments(y.mean.mean(0), y.variance.mean(0) + y.mean.var(0, unbiased=False))
    return f, y


def plot_posterior_1d(
    model,
    X=None,
    likelihood=None,
    train_x=None,
    train_y=None,
    test_x=None,
    test_y=None,
    num_samples: int = 3,
    ax=None,
    path=None,
    x_transform=None,
    y_transform=None,
    title=None,
):
    r"""Posterior mean ± 2σ over a 1-D input, with the training data and posterior samples.

    Args:
        model: a fitted torchgp model (put in eval mode).
        X: ``(t,)`` or ``(t, 1)`` inputs to plot at; default 400 points spanning the data (10% margin).
        likelihood: if given, the band includes observation noise (``likelihood(model(X))``).
        train_x, train_y: ``(n,)`` data to show; default the model's training data.
        test_x, test_y: held-out data to show in another colour.
        num_samples: posterior function samples drawn (0 for none).
        ax: matplotlib axes to draw into (default a new figure).
        path: save the figure there.
        x_transform, y_transform: callables mapping model-space values back to data units for display
            (``y_transform(v, scale=True)`` maps standard deviations).
        title: axes title.

    Returns:
        The matplotlib ``Figure``.
    """
    plt = _pyplot()
    if train_x is None and getattr(model, "train_inputs", None) is not None:
        train_x, train_y = model.train_inputs[0], model.train_targets
    if X is None:
        ref = train_x if train_x is not None else torch.linspace(0, 1, 10)
        ref = ref.reshape(-1)
        lo, hi = float(ref.min()), float(ref.max())
        if test_x is not None:
            lo, hi = min(lo, float(test_x.min())), max(hi, float(test_x.max()))
        pad = 0.1 * (hi - lo or 1.0)
        dtype = train_x.dtype if torch.is_tensor(train_x) else torch.get_default_dtype()
        X = torch.linspace(lo - pad, hi + pad, 400, dtype=dtype)
    X = X.unsqueeze(-1) if X.dim() == 1 else X
    f, y = _predict(model, X, likelihood)
    mean, std = _np(y.mean), _np(y.variance.clamp_min(0).sqrt())
    fx = x_transform or (lambda v: v)
    fy = y_transform or (lambda v, scale=False: v)
    xs = fx(_np(X[:, 0]))
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(9, 4.5))
    ax.fill_between(xs, fy(mean - 2 * std), fy(mean + 2 * std), alpha=0.25, color="C0", label="mean ± 2σ")
    ax.plot(xs, fy(mean), color="C0", lw=1.5, label="posterior mean")
    if num_samples > 0:
        with torch.no_grad():
            samples = _np(f.sample(torch.Size([num_samples])))
        for i, s in enumerate(samples):
            ax.plot(xs, fy(s), color="C2", lw=0.6, alpha=0.7, label="posterior samples" if i == 0 else None)
    if train_x is not None:
        ax.plot(fx(_np(train_x).reshape(-1)), fy(_np(train_y).reshape(-1)), "k.", ms=3, label="training data")
    if test_x is not None:
        ax.plot(fx(_np(test_x).reshape(-1)), fy(_np(test_y).reshape(-1)), ".", color="C3", ms=3, label="test data")
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def plot_posterior_2d(model, train_x=None, bounds=None, resolution: int = 60, path=None, title=None):
    r"""Heat maps of the posterior mean and standard deviation over a 2-D input.

    Args:
        model: a fitted torchgp model with 2-D inputs.
        train_x: ``(n, 2)`` points to overlay; default the model's training inputs.
        bounds: ``((x0_min, x0_max), (x1_min, x1_max))``; default the data's range.
        resolution: grid points per axis.
        path: save the figure there.
        title: figure title.

    Returns:
        The matplotlib ``Figure``.
    """
    plt = _pyplot()
    if train_x is None and getattr(model, "train_inputs", None) is not None:
        train_x = model.train_inputs[0]
    if bounds is None:
        if train_x is None:
            raise ValueError("plot_posterior_2d needs bounds=((lo, hi), (lo, hi)) when the model holds no data.")
        bounds = [(float(train_x[:, j].min()), float(train_x[:, j].max())) for j in range(2)]
    dtype = train_x.dtype if torch.is_tensor(train_x) else torch.get_default_dtype()
    g0 = torch.linspace(*bounds[0], resolution, dtype=dtype)
    g1 = torch.linspace(*bounds[1], resolution, dtype=dtype)
    G0, G1 = torch.meshgrid(g0, g1, indexing="xy")
    grid = torch.stack([G0.reshape(-1), G1.reshape(-1)], -1)
    f, _ = _predict(model, grid)
    mean = _np(f.mean).reshape(resolution, resolution)
    std = _np(f.variance.clamp_min(0).sqrt()).reshape(resolution, resolution)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    extent = (*bounds[0], *bounds[1])
    for ax, values, name in ((axes[0], mean, "posterior mean"), (axes[1], std, "posterior std")):
        im = ax.imshow(values, origin="lower", extent=extent, aspect="auto", cmap="viridis")
        fig.colorbar(im, ax=ax)
        if train_x is not None:
            ax.plot(_np(train_x[:, 0]), _np(train_x[:, 1]), "k.", ms=3)
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_training(result, ax=None, path=None):
    r"""The loss after each iteration of a fit (``result.history`` of a :class:`~torchgp.optim.fit.FitResult`).

    Returns:
        The matplotlib ``Figure``.
    """
    plt = _pyplot()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(1, len(result.history) + 1), result.history, "-", color="C0")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (−mll / n)")
    ax.set_title(f"{result.optimizer}: {result.stop_reason}, final loss {result.loss:.4g}")
    return _finish(fig, path)


def plot_predicted_vs_observed(mean, std, observed, path=None, title=None):
    r"""Predicted means with 2σ error bars against observed values (any input dimension).

    Args:
        mean, std, observed: ``(t,)`` arrays or tensors.
        path: save the figure there.
        title: axes title.

    Returns:
        The matplotlib ``Figure``.
    """
    plt = _pyplot()
    mean, std, observed = _np(mean).reshape(-1), _np(std).reshape(-1), _np(observed).reshape(-1)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.errorbar(observed, mean, yerr=2 * std, fmt=".", ms=3, alpha=0.6, elinewidth=0.7)
    lo, hi = float(min(observed.min(), mean.min())), float(max(observed.max(), mean.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("observed")
    ax.set_ylabel("predicted (± 2σ)")
    if title:
        ax.set_title(title)
    return _finish(fig, path)
