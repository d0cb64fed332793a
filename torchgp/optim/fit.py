r"""``fit``: train every hyperparameter of the model behind an MLL or ELBO in one call.

Exact GPs default to scipy's L-BFGS-B on the unconstrained (raw) parameters, flattened into one
float64 vector, with gradients from autograd; variational models (or anything trained on
minibatches) default to Adam. Both share the same stopping rules, restarts from perturbed
starting values (the best run is kept), recovery from :class:`~torchgp.errors.NotPSDError`,
a progress bar and a :class:`FitResult` record.

Fitted on its own data (L-BFGS-B, the batched lockstep or a torch optimiser), an exact GP built the standard
way (``forward`` returning ``MultivariateNormal(self.mean_module(x), self.covar_module(x))``, a Gaussian
likelihood, no priors, hooks or added loss terms, the Cholesky path) is evaluated from its mean, kernel and noise
directly (:mod:`torchgp.optim._direct`) once its first evaluation showed the same loss and gradients as the full
path: the user's ``forward`` then runs once per start, not at every evaluation.

Example:
    >>> import torch, torchgp
    >>> X = torch.linspace(0, 1, 20, dtype=torch.float64).unsqueeze(-1)
    >>> y = torch.sin(6 * X[:, 0])
    >>> class GP(torchgp.models.ExactGP):
    ...     def __init__(self, X, y, lik):
    ...         super().__init__(X, y, lik)
    ...         self.mean_module = torchgp.means.ConstantMean()
    ...         self.covar_module = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel())
    ...     def forward(self, x):
    ...         return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))
    >>> lik = torchgp.likelihoods.GaussianLikelihood()
    >>> model = GP(X, y, lik).double()
    >>> result = torchgp.fit(torchgp.mlls.ExactMarginalLogLikelihood(lik, model), progress=False)
    >>> result.stop_reason in ("converged", "maxiter", "patience")
    True
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch

from torchgp import _record, settings
from torchgp.errors import InputError, NonFiniteError, NotPSDError
from torchgp.module import fit_scope, reuse_constrained_values
from torchgp.optim._active import SubBatch
from torchgp.optim._batched import independent_blocks, member_objective, run_lockstep
from torchgp.optim._direct import FitLoss
from torchgp.optim._run import _ParamVector, _Run
from torchgp.optim._scale import standardize_lengthscales
from torchgp.optim._scipy_runner import _scipy_blas_one_thread, run_scipy
from torchgp.optim._torch_runner import optimizer_name, run_torch
from torchgp.optim.result import FitResult

__all__ = ["fit", "FitResult"]


def _model_of(mll):
    model = getattr(mll, "model", None)
    if model is None:
        raise InputError(
            f"fit needs a marginal log-likelihood or ELBO object holding .model and .likelihood "
            f"(e.g. ExactMarginalLogLikelihood(likelihood, model)); got {type(mll).__name__}."
        )
    return model


def _is_exact(model) -> bool:
    return getattr(model, "train_inputs", None) is not None and getattr(model, "train_targets", None) is not None


# --------------------------------------------------------------------------- the public function
def fit(
    mll,
    optimizer="L-BFGS-B",
    *,
    data=None,
    maxiter: int | None = None,
    lr: float = 0.05,
    ftol: float | None = None,
    gtol: float = 1e-5,
    patience: int | None = None,
    restarts: int = 0,
    perturbation: float = 1.0,
    seed: int | None = None,
    max_jitter_retries: int = 3,
    progress: bool | None = None,
    batch_independent: bool | None = None,
    standardize_inputs: bool = True,
) -> FitResult:
    r"""Fit all trainable parameters of the model behind ``mll`` (maximise ``mll``).

    Args:
        mll: an ``ExactMarginalLogLikelihood``, ``VariationalELBO`` or any objective with ``.model``;
            ``mll(model(X), y)`` is maximised (``-mll`` is the loss).
        optimizer: ``"L-BFGS-B"`` (scipy, default; deterministic full-batch), a ``torch.optim`` name
            (``"adam"``), class, instance or list of instances (e.g. natural gradients + Adam).
        data: training data for models without their own (variational): ``(X, y)`` tensors, or a
            ``DataLoader`` of ``(X (b, d), y (b,))`` minibatches (then ``maxiter`` counts epochs).
            ``None`` uses the exact GP's ``train_inputs``/``train_targets``.
        maxiter: iteration cap per start (default 1000 for L-BFGS-B, 200 for torch optimisers).
        lr: learning rate for a torch optimiser given by name or class.
        ftol: relative loss change regarded as no improvement (default 1e-9 for L-BFGS-B, 1e-6 otherwise).
        gtol: largest absolute gradient entry regarded as converged.
        patience: stop after this many iterations without an ftol-improvement of the best loss.
        restarts: extra starts from the initial raw values plus ``N(0, perturbation²)``; the best is kept.
        perturbation: standard deviation of the perturbation of the raw parameters for restarts.
        seed: seed of the restart perturbations (a private generator; the global RNG is untouched).
        max_jitter_retries: on ``NotPSDError`` a start is retried with 10× more Cholesky jitter this many times.
        progress: tqdm progress bar; default on only when stderr is a terminal.
        batch_independent: for L-BFGS-B on a batch of independent exact GPs (loss of shape ``(B,)``, every
            parameter of shape ``(B, ...)``, e.g. ``batch_shape=(B,)``): one L-BFGS-B per model, all models
            evaluated together in one batched pass per round, so each follows the iterates of fitting it alone
            (stopping rules apply per model; ``iterations`` is then the largest per model). ``None`` (default):
            whenever the shapes allow it; ``False``: one L-BFGS-B on the summed loss.
        standardize_inputs: for an exact GP (a model holding its training data; a variational model's first call
            initialises its variational distribution, so it is not probed), fit each lengthscale that is still at
            its default, and whose inputs' standard deviation ``s`` (per column for ARD, averaged otherwise, per
            batch member) is outside ``[1e-2, 1e2]`` times it, in units of ``s``: the same as fitting on
            standardised inputs, with the result reported in the inputs' own units (a note in
            :attr:`FitResult.warnings` names each such kernel). Lengthscales set by the user, periods and
            ``PeriodicKernel`` are never touched. ``False``: optimise the parameters as given.

    Returns:
        A :class:`FitResult`. The model holds the best parameters found, also after a
        ``KeyboardInterrupt`` (then ``stop_reason == "interrupted"``).

    Warns:
        GPInputWarning: the model's own check at its first training-mode call (inputs spanning less than 1e-3 or
            more than 1e3 times a kernel's lengthscale, where the default model fits nothing; with
            ``standardize_inputs`` only for lengthscales it did not rescale, e.g. ones set by the user); like every
            library warning during the fit, it is also recorded in :attr:`FitResult.warnings`.

    Raises:
        InputError: no model behind ``mll``, no trainable parameters, or no data for a variational model.
        NotPSDError: every start failed even with more jitter (the message says how to fix it).
    """
    model = _model_of(mll)
    exact = _is_exact(model)
    rescaling, probed = None, []
    if standardize_inputs and exact:
        mll.train()
        model.train()
        with _record.recording() as probed:  # warnings of the model's probing call belong to the fit too
            rescaling = standardize_lengthscales(model, model.train_inputs)
    notes = rescaling.messages() if rescaling is not None else []
    try:
        result = _fit(
            mll, model, exact, optimizer, data, maxiter, lr, ftol, gtol, patience, restarts, perturbation, seed,
            max_jitter_retries, progress, batch_independent,
        )  # fmt: skip
    finally:
        if rescaling is not None:
            rescaling.undo()
    result.warnings[:0] = list(probed)
    result.warnings.extend(notes)
    return result


def _fit(
    mll, model, exact, optimizer, data, maxiter, lr, ftol, gtol, patience, restarts, perturbation, seed,
    max_jitter_retries, progress, batch_independent,
) -> FitResult:  # fmt: skip
    """The body of :func:`fit` (arguments as there)."""
    if data is None and not exact:
        raise InputError(
            f"fit: {type(model).__name__} holds no training data; pass data=(X, y) or a DataLoader of (X, y) batches."
        )
    if data is not None and not exact and torch.distributed.is_available() and torch.distributed.is_initialized():
        from torchgp.distributed.data_parallel import fit as data_parallel_fit  # DDP over the process group's ranks

        return data_parallel_fit(
            mll, data, optimizer, maxiter=200 if maxiter is None else maxiter, lr=lr, seed=seed or 0
        )
    params = [p for p in mll.parameters() if p.requires_grad]
    if not params:
        raise InputError("fit: the model has no trainable parameters (all have requires_grad=False).")
    scipy_opt = isinstance(optimizer, str) and optimizer.upper().replace("_", "-") in ("L-BFGS-B", "LBFGSB", "SCIPY")
    maxiter = (1000 if scipy_opt else 200) if maxiter is None else int(maxiter)
    ftol = (1e-9 if scipy_opt else 1e-6) if ftol is None else float(ftol)
    if maxiter < 1:
        raise InputError(f"fit: maxiter must be >= 1; got {maxiter}.")
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())

    mll.train()
    model.train()
    vec = _ParamVector(params)
    x0 = vec.get()
    blocks, member_losses = None, None
    if scipy_opt and data is None and batch_independent is not False:

        def member_losses():  # each member's own priors only: the members stay independent
            with reuse_constrained_values():
                return -member_objective(mll, model)

        # an exact GP's loss has the batch shape of its targets (*batch, n); checked again at every evaluation
        targets = model.train_targets
        shape_probe = torch.empty(targets.shape[:-1] if torch.is_tensor(targets) and targets.dim() > 1 else ())
        blocks = independent_blocks(params, vec.sizes, shape_probe)
        if batch_independent and blocks is None:
            raise InputError(
                "fit(batch_independent=True) needs a loss of shape (B,) and every trainable parameter of shape "
                f"(B, ...); got a loss of shape {tuple(shape_probe.shape)} and parameters of shapes "
                f"{[tuple(p.shape) for p in params]}."
            )
    generator = np.random.default_rng(seed)
    caught: list[str] = []
    runs: list[_Run | None] = []
    start_time = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=maxiter * (restarts + 1), desc="fit", leave=False)
    interrupted = False
    run = None
    name = "L-BFGS-B" if scipy_opt else optimizer_name(optimizer)
    try:
        for start in range(restarts + 1):
            x_start = x0 if start == 0 else x0 + perturbation * generator.standard_normal(x0.shape)
            run = None
            jitter = settings.cholesky_jitter.value(params[0].dtype)
            for attempt in range(max_jitter_retries + 1):
                vec.set(x_start)
                run = _Run(vec)
                try:
                    # the library's warnings reach the user's filters unchanged and are also recorded here; the
                    # structure-only checks of the objective run at the run's first evaluation (fit_scope)
                    with _record.recording() as wlist, settings.cholesky_jitter(jitter), fit_scope():
                        if blocks is not None:
                            with _scipy_blas_one_thread():
                                subset = SubBatch.build(mll, model, params, len(blocks))
                                loss_vector = FitLoss(mll, model, member_losses, False, params)
                                run_lockstep(run, vec, blocks, loss_vector, maxiter, ftol, gtol, patience, bar, subset)
                        elif scipy_opt:
                            run_scipy(run, mll, model, vec, data, maxiter, ftol, gtol, patience, bar)
                        else:
                            run_torch(run, mll, model, vec, data, optimizer, lr, maxiter, ftol, gtol, patience, bar)
                    caught.extend(wlist)
                    if run.failed_points:
                        caught.append(
                            f"start {start}: {len(run.failed_points)} trial point(s) failed and were "
                            f"backtracked from (last: {run.failed_points[-1]})"
                        )
                    break
                except (NotPSDError, NonFiniteError) as err:
                    caught.extend(wlist)
                    caught.append(f"start {start}, attempt {attempt}: {type(err).__name__}: {err}")
                    run = None
                    if attempt < max_jitter_retries:
                        jitter *= 10
                        caught.append(f"start {start}: retrying with cholesky_jitter={jitter:g}")
            runs.append(run)
    except KeyboardInterrupt:
        interrupted = True
        # the run in progress is not in `runs` yet; it tracked its best point so far
        if run is not None and run not in runs:
            runs.append(run)
    finally:
        if bar is not None:
            bar.close()

    finished = [(i, r) for i, r in enumerate(runs) if r is not None and math.isfinite(r.best_loss)]
    elapsed = time.perf_counter() - start_time
    if not finished:
        vec.set(x0)
        if interrupted:
            return FitResult(math.nan, 0, 0, elapsed, "interrupted", caught, [], [], 0, name)
        raise NotPSDError(
            "fit: every start failed (the kernel matrix was not positive definite or the loss was not finite, even "
            f"with {max_jitter_retries} jitter increases). Use float64 (model.double()), raise the noise's lower bound "
            "(GaussianLikelihood(noise_constraint=GreaterThan(1e-4))), remove duplicate inputs, or standardise X "
            "and y. Details: " + "; ".join(caught[-3:])
        )
    best_index, best = min(finished, key=lambda item: item[1].best_loss)
    vec.set(best.best_x)
    return FitResult(
        loss=best.best_loss,
        iterations=sum(r.nit for r in runs if r is not None),
        function_evals=sum(r.nfev for r in runs if r is not None),
        time=elapsed,
        stop_reason="interrupted" if interrupted else best.stop_reason,
        warnings=caught,
        history=list(best.history),
        restart_losses=[r.best_loss if r is not None else math.nan for r in runs],
        best_restart=best_index,
        optimizer=name,
        message=best.message,
    )
