"""A compact Bayesian-optimisation loop: fit a GP, maximise LogEI, evaluate, repeat.

Inputs are scaled to the unit cube and targets standardised before each fit, so the default priors
(Gamma priors on lengthscales and outputscale, as in BoTorch's former defaults) mean the same for
every problem. The GP's hyperparameters are fitted by L-BFGS-B on the exact marginal likelihood,
each round from the previous round's optimum (a warm start).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize as scipy_minimize

from torchgp.bo.acquisition import ExpectedImprovement, LogExpectedImprovement, UpperConfidenceBound
from torchgp.bo.optimize import check_bounds, optimize_acqf
from torchgp.constraints import GreaterThan
from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError, NonFiniteError, NotPSDError
from torchgp.kernels import MaternKernel, ScaleKernel
from torchgp.likelihoods import GaussianLikelihood
from torchgp.means import ConstantMean
from torchgp.mlls import ExactMarginalLogLikelihood
from torchgp.models import ExactGP
from torchgp.priors import GammaPrior


class BOModel(ExactGP):
    """The loop's surrogate: constant mean, ``ScaleKernel(Matérn-5/2 with ARD)``, Gaussian noise.

    Args:
        X: ``(n, d)`` inputs (scaled to the unit cube by the loop); y: ``(n,)`` standardised targets.
        noise_floor: lower bound of the noise variance (small for deterministic objectives).
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, noise_floor: float = 1e-6):
        likelihood = GaussianLikelihood(noise_constraint=GreaterThan(noise_floor))
        super().__init__(X, y, likelihood)
        d = X.shape[-1]
        self.mean_module = ConstantMean()
        self.covar_module = ScaleKernel(
            MaternKernel(nu=2.5, ard_num_dims=d, lengthscale_prior=GammaPrior(3.0, 6.0)),
            outputscale_prior=GammaPrior(2.0, 0.15),
        )

    def forward(self, x: torch.Tensor) -> MultivariateNormal:
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))


def fit_gp_mll(model: ExactGP, maxiter: int = 200) -> float:
    """Fit ``model``'s hyperparameters by L-BFGS-B on the negative exact marginal log-likelihood.

    Uses :func:`torchgp.optim.fit.fit` (scipy L-BFGS-B, jitter retries) where that module is available,
    else :func:`fit_scipy_lbfgsb`. The model is left in eval mode.

    Args:
        model: an ExactGP with training data; its likelihood is ``model.likelihood``.
        maxiter: L-BFGS-B iterations.

    Returns:
        The final ``-mll`` (per data point, priors included).
    """
    try:
        from torchgp.optim.fit import fit
    except ImportError:  # the optim layer is optional for this loop
        fit = None
    if fit is None:
        return fit_scipy_lbfgsb(model, maxiter)
    loss = fit(ExactMarginalLogLikelihood(model.likelihood, model), maxiter=maxiter, progress=False).loss
    model.eval()
    return loss


def fit_scipy_lbfgsb(model: ExactGP, maxiter: int = 200) -> float:
    """Minimal L-BFGS-B fit of an ExactGP's hyperparameters on ``-mll`` (autograd gradients).

    Iterates that fail (non-PSD kernel matrix, non-finite loss) are reported to L-BFGS-B as ``inf``
    and the best parameters seen are kept. The model is left in eval mode.

    Args:
        model: an ExactGP with training data; its likelihood is ``model.likelihood``.
        maxiter: L-BFGS-B iterations.

    Returns:
        The best ``-mll`` seen (per data point, priors included).
    """
    model.train()
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    params = [p for p in model.parameters() if p.requires_grad]
    X, y = model.train_inputs[0], model.train_targets
    best = {"loss": float("inf"), "x": torch.nn.utils.parameters_to_vector(params).detach().clone()}

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        torch.nn.utils.vector_to_parameters(torch.from_numpy(x).to(params[0]), params)
        try:
            loss = -mll(model(X), y).sum()
            grads = torch.autograd.grad(loss, params)
        except (NotPSDError, NonFiniteError):
            return float("inf"), np.zeros_like(x)
        g = torch.cat([gi.reshape(-1) for gi in grads])
        if not (torch.isfinite(loss) and torch.all(torch.isfinite(g))):
            return float("inf"), np.zeros_like(x)
        if loss.item() < best["loss"]:
            best["loss"], best["x"] = loss.item(), torch.from_numpy(x.copy())
        return loss.item(), g.double().numpy()

    x0 = torch.nn.utils.parameters_to_vector(params).detach().double().numpy()
    scipy_minimize(objective, x0, jac=True, method="L-BFGS-B", options={"maxiter": maxiter})
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(best["x"].to(params[0]), params)
    model.eval()
    return best["loss"]


_WARM_RAW_FLOOR = -3.0  # softplus(-3) = 0.049, slope sigmoid(-3) = 0.047


def fit_surrogate(X: torch.Tensor, y: torch.Tensor, previous: BOModel | None = None) -> BOModel:
    """A :class:`BOModel` on ``X (n, d)``, ``y (n,)`` fitted by :func:`fit_gp_mll`, in eval mode.

    With ``previous`` (a ``BOModel`` of the same ``d``, e.g. last round's), the fit starts from its
    hyperparameters instead of the defaults: a warm start. One more observation moves the optimum of the
    marginal likelihood little, so L-BFGS-B reaches it in fewer evaluations.

    A raw value below ``_WARM_RAW_FLOOR = -3`` under a softplus constraint (``value = a + softplus(raw)``: a
    noise variance or lengthscale at its bound, where the transform's slope ``sigmoid(raw)`` is below 0.05)
    cannot move in raw space whatever the data say. Where the loss's gradient at the warm start points away
    from the bound (the new data ask for a larger value), such a value restarts from the floor; where it
    points into the bound (a deterministic objective's noise at its floor), it stays. Without this, a noise
    variance at its floor for n points stayed there for every later round on Ackley-10, where a cold fit
    found a much higher marginal likelihood.
    """
    model = BOModel(X, y).double()
    if previous is not None:
        if not isinstance(previous, BOModel) or previous.train_inputs[0].shape[-1] != model.train_inputs[0].shape[-1]:
            got = (
                f"a BOModel on {previous.train_inputs[0].shape[-1]} inputs"
                if isinstance(previous, BOModel)
                else type(previous).__name__
            )
            raise InputError(
                f"fit_surrogate: previous must be a BOModel on the same {model.train_inputs[0].shape[-1]} inputs "
                f"as X; got {got}. Pass previous=None for a cold fit."
            )
        model.load_state_dict(previous.state_dict())  # parameters and priors only; the data are X, y
        _free_pinned(model)
    fit_gp_mll(model)
    return model


def _free_pinned(model: BOModel) -> None:
    """Raise to ``_WARM_RAW_FLOOR`` the raw values pinned at a softplus bound whose growth lowers the loss."""
    pinned = [
        param
        for _, param, constraint in model.named_parameters_and_constraints()
        if isinstance(constraint, GreaterThan)
        and getattr(constraint, "_transform", None) is None
        and bool((param < _WARM_RAW_FLOOR).any())
    ]
    if not pinned:
        return
    model.train()
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    try:
        loss = -mll(model(*model.train_inputs), model.train_targets)
        grads = torch.autograd.grad(loss, pinned)
    except (NotPSDError, NonFiniteError):
        grads = [torch.full_like(p, -1.0) for p in pinned]  # the warm start itself fails: free them all
    with torch.no_grad():
        for param, grad in zip(pinned, grads):
            # d loss / d raw = sigmoid(raw) · d loss / d value: the same sign, so grad < 0 asks for a larger value
            param[(param < _WARM_RAW_FLOOR) & (grad < 0)] = _WARM_RAW_FLOOR


@dataclass
class BOResult:
    """Outcome of :func:`minimize`.

    Attributes:
        x: best point found, ``(d,)``.
        fun: its objective value.
        X: every evaluated point in order, ``(n, d)``.
        y: their objective values, ``(n,)``.
        model: the last fitted surrogate (on unit-cube inputs and standardised targets).
    """

    x: torch.Tensor
    fun: float
    X: torch.Tensor
    y: torch.Tensor
    model: ExactGP | None = None


_ACQUISITIONS = ("logei", "ei", "ucb")


def minimize(
    f: Callable[[torch.Tensor], float],
    bounds,
    n_init: int = 5,
    n_iter: int = 20,
    acquisition: str = "logei",
    beta: float = 4.0,
    num_restarts: int = 4,
    raw_samples: int = 128,
    seed: int = 0,
    callback: Callable[[int, torch.Tensor, float], None] | None = None,
    warm_start: bool = True,
) -> BOResult:
    """Minimise a black-box function over a box by Bayesian optimisation.

    ``n_init`` scrambled Sobol points start it; each of the ``n_iter`` rounds fits :class:`BOModel`
    to all observations (:func:`fit_surrogate`), maximises the acquisition function with
    :func:`optimize_acqf` and evaluates ``f`` at the maximiser.

    Args:
        f: objective; takes a point ``(d,)`` (float64 tensor) and returns a float (or 0-d tensor).
        bounds: ``(2, d)`` box: lower bounds in row 0, upper bounds in row 1.
        n_init: initial Sobol design size (≥ 2).
        n_iter: number of BO rounds (one evaluation each), so ``n_init + n_iter`` evaluations in all.
        acquisition: ``"logei"`` (default), ``"ei"`` or ``"ucb"`` (with ``beta``).
        beta: UCB exploration weight.
        num_restarts, raw_samples: passed to :func:`optimize_acqf`.
        seed: seeds the initial design and the acquisition optimiser (repeatable runs).
        callback: called as ``callback(i, x (d,), y)`` after every evaluation.
        warm_start: start each round's hyperparameter fit from the previous round's optimum (the data
            change by one point, so the optimum moves little and L-BFGS-B needs fewer steps), with raw values
            pinned at a softplus bound moved back into range (see :func:`fit_surrogate`); ``False`` starts every
            fit from the model's default initial values.

    Returns:
        :class:`BOResult` with the best point, its value and the whole history.

    Example:
        >>> res = minimize(lambda x: ((x - 0.3) ** 2).sum().item(), torch.tensor([[0.0, 0.0], [1.0, 1.0]]),
        ...                n_init=4, n_iter=6)  # doctest: +SKIP
    """
    bounds = check_bounds(bounds).to(torch.float64)
    if acquisition not in _ACQUISITIONS:
        raise InputError(f"minimize: acquisition must be one of {_ACQUISITIONS}; got {acquisition!r}.")
    if n_init < 2 or n_iter < 0:
        raise InputError(f"minimize needs n_init >= 2 and n_iter >= 0; got n_init={n_init}, n_iter={n_iter}.")
    d = bounds.shape[1]
    lower, width = bounds[0], bounds[1] - bounds[0]
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        U = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed).draw(n_init, dtype=torch.float64)
        X_unit, ys = [], []

        def evaluate(u: torch.Tensor) -> None:
            x = lower + width * u
            y = float(f(x.clone()))
            if not np.isfinite(y):
                raise InputError(f"minimize: f returned {y} at x = {x.tolist()}; the objective must be finite.")
            X_unit.append(u)
            ys.append(y)
            if callback is not None:
                callback(len(ys) - 1, x, y)

        for u in U:
            evaluate(u)
        unit = torch.stack([torch.zeros(d), torch.ones(d)]).to(torch.float64)
        model = None
        for _ in range(n_iter):
            Xt = torch.stack(X_unit)
            yt = torch.tensor(ys, dtype=torch.float64)
            y_std = (yt - yt.mean()) / yt.std().clamp_min(1e-12)  # standardise: the priors assume unit scale
            model = fit_surrogate(Xt, y_std, model if warm_start else None)
            if acquisition == "logei":
                acqf = LogExpectedImprovement(model, best_f=y_std.min(), maximize=False)
            elif acquisition == "ei":
                acqf = ExpectedImprovement(model, best_f=y_std.min(), maximize=False)
            else:
                acqf = UpperConfidenceBound(model, beta=beta, maximize=False)
            u_next, _ = optimize_acqf(acqf, unit, q=1, num_restarts=num_restarts, raw_samples=raw_samples)
            evaluate(u_next.reshape(d))
    finally:
        torch.random.set_rng_state(generator_state)
    X = lower + width * torch.stack(X_unit)
    y = torch.tensor(ys, dtype=torch.float64)
    i = int(torch.argmin(y))
    return BOResult(x=X[i], fun=float(y[i]), X=X, y=y, model=model)
