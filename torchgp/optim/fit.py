r"""``fit``: train every hyperparameter of the model behind an MLL or ELBO in one call.

Exact GPs default to scipy's L-BFGS-B on the unconstrained (raw) parameters, flattened into one
float64 vector, with gradients from autograd; variational models (or anything trained on
minibatches) default to Adam. Both share the same stopping rules, restarts from perturbed
starting values (the best run is kept), recovery from :class:`~torchgp.errors.NotPSDError`,
a progress bar and a :class:`FitResult` record.

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

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from torchgp import _record, settings
from torchgp.errors import InputError, NonFiniteError, NotPSDError
from torchgp.optim._batched import independent_blocks, run_lockstep

__all__ = ["fit", "FitResult"]


@dataclass
class FitResult:
    """What happened during :func:`fit`.

    Attributes:
        loss: final loss of the kept (best) run, ``-mll`` (per data point, GPyTorch's scaling).
        iterations: optimiser iterations summed over all runs (epochs when training on a DataLoader).
        function_evals: loss evaluations summed over all runs.
        time: wall-clock seconds.
        stop_reason: why the kept run stopped: ``"converged"`` (ftol/gtol), ``"maxiter"``,
            ``"patience"``, ``"stalled"`` (the L-BFGS-B line search could not improve further, usually at
            the optimum to rounding precision), ``"interrupted"`` (KeyboardInterrupt) or ``"failed"`` (every start failed).
        warnings: messages of the library's warnings during the fit (jitter added, CG not converged, ...) and
            of fit's own recoveries (restarts, backtracked trial points). They are recorded without touching
            the process-wide warning filters; what is shown is still up to the user's filters.
        history: loss after each iteration of the kept run.
        restart_losses: final loss of each start (``nan`` for a start that failed).
        best_restart: index of the kept start (0 is the model's own initial values).
        optimizer: name of the optimiser used.
        message: the optimiser's own message (scipy), if any.
    """

    loss: float
    iterations: int
    function_evals: int
    time: float
    stop_reason: str
    warnings: list[str] = field(default_factory=list)
    history: list[float] = field(default_factory=list)
    restart_losses: list[float] = field(default_factory=list)
    best_restart: int = 0
    optimizer: str = ""
    message: str = ""

    @property
    def success(self) -> bool:
        """True when the fit ended normally (converged, maxiter or patience)."""
        return self.stop_reason in ("converged", "maxiter", "patience", "stalled")

    def __str__(self) -> str:
        return (
            f"FitResult({self.optimizer}: loss {self.loss:.6g}, {self.stop_reason}, {self.iterations} iterations, "
            f"{self.function_evals} evaluations, {self.time:.2f} s, {len(self.restart_losses)} start(s), "
            f"{len(self.warnings)} warning(s))"
        )


class _Stop(Exception):
    """Raised from inside a scipy run to end it (patience exhausted)."""


# --------------------------------------------------------------------------- parameters as one vector
class _ParamVector:
    """The trainable parameters of a module as one flat float64 NumPy vector (and back)."""

    def __init__(self, params: list[torch.nn.Parameter]):
        self.params = params
        self.sizes = [p.numel() for p in params]

    def get(self) -> np.ndarray:
        if not self.params:
            return np.zeros(0)
        return torch.cat([p.detach().reshape(-1).to(torch.float64).cpu() for p in self.params]).numpy().copy()

    def set(self, x: np.ndarray) -> None:
        offset = 0
        with torch.no_grad():
            for p, size in zip(self.params, self.sizes):
                chunk = torch.from_numpy(np.asarray(x[offset : offset + size], dtype=np.float64))
                p.copy_(chunk.reshape(p.shape).to(dtype=p.dtype, device=p.device))
                offset += size

    def grad(self) -> np.ndarray:
        chunks = [
            torch.zeros(p.numel(), dtype=torch.float64)
            if p.grad is None
            else p.grad.detach().reshape(-1).to(torch.float64).cpu()
            for p in self.params
        ]
        return torch.cat(chunks).numpy().copy() if chunks else np.zeros(0)


# --------------------------------------------------------------------------- the loss
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


def _batches(data):
    """Yield ``(X, y)`` pairs from a DataLoader / iterable of pairs, or one ``(X, y)`` tuple."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        yield data[0], data[1]
        return
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise InputError(
                "fit(data=...) must yield (X, y) pairs (e.g. DataLoader(TensorDataset(X, y), batch_size=256)); "
                f"got a batch of type {type(batch).__name__}."
            )
        yield batch[0], batch[1]


def _loss_on(mll, model, X, y) -> torch.Tensor:
    loss = -mll(model(X), y)
    return loss.sum() if loss.dim() else loss


def _full_loss(mll, model, data) -> torch.Tensor:
    """``-mll`` on the whole training set: the exact GP's own data, or the mean over ``data``'s batches."""
    if data is None:
        return _loss_on(mll, model, *model.train_inputs, model.train_targets)
    total, count = 0.0, 0
    for X, y in _batches(data):
        total = total + _loss_on(mll, model, X, y)
        count += 1
    if count == 0:
        raise InputError("fit(data=...) yielded no batches; pass a non-empty DataLoader or (X, y).")
    return total / count


# --------------------------------------------------------------------------- optimiser choice
def _torch_optimizer(optimizer, params, lr):
    if isinstance(optimizer, torch.optim.Optimizer):
        return [optimizer]
    if isinstance(optimizer, (list, tuple)) and all(isinstance(o, torch.optim.Optimizer) for o in optimizer):
        return list(optimizer)
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return [optimizer(params, lr=lr)]
    if isinstance(optimizer, str):
        names = {name.lower(): name for name in dir(torch.optim) if isinstance(getattr(torch.optim, name), type)}
        name = names.get(optimizer.lower())
        cls = getattr(torch.optim, name) if name else None
        if cls is not None and issubclass(cls, torch.optim.Optimizer):
            return [cls(params, lr=lr)]
    raise InputError(
        f"fit: unknown optimizer {optimizer!r}. Pass 'L-BFGS-B' (scipy), the name of a torch.optim optimiser "
        "('adam', 'sgd', 'lbfgs', ...), a torch.optim.Optimizer class, or an instance (or a list of instances)."
    )


def _optimizer_name(optimizer) -> str:
    if isinstance(optimizer, str):
        return optimizer
    if isinstance(optimizer, (list, tuple)):
        return "+".join(type(o).__name__ for o in optimizer)
    return optimizer.__name__ if isinstance(optimizer, type) else type(optimizer).__name__


# --------------------------------------------------------------------------- one run
class _Run:
    """State of one start: best parameters seen, history, counters."""

    def __init__(self, vec: _ParamVector):
        self.vec = vec
        self.best_loss = math.inf
        self.best_x = vec.get()
        self.history: list[float] = []
        self.nfev = 0
        self.nit = 0
        self.stop_reason = "maxiter"
        self.message = ""
        self.since_improvement = 0
        self.failed_points: list[str] = []

    def record_eval(self, loss: float) -> None:
        self.nfev += 1
        if math.isfinite(loss) and loss < self.best_loss:
            self.best_loss = loss
            self.best_x = self.vec.get()

    def record_iteration(self, loss: float, ftol: float, patience: int | None) -> None:
        """Count an iteration; raise :class:`_Stop` when ``patience`` iterations brought no ftol-improvement."""
        previous_best = min(self.history) if self.history else math.inf
        self.history.append(loss)
        self.nit += 1
        if loss < previous_best - ftol * max(1.0, abs(previous_best) if math.isfinite(previous_best) else 1.0):
            self.since_improvement = 0
        else:
            self.since_improvement += 1
        if patience is not None and self.since_improvement >= patience:
            self.stop_reason = "patience"
            raise _Stop


_SCIPY_BLAS = []  # the threadpoolctl controller of scipy's/numpy's own OpenBLAS, found once (loaded libraries stay)


def _scipy_blas_one_thread():
    """A context in which scipy's and numpy's bundled OpenBLAS use one thread (torch's BLAS is untouched).

    L-BFGS-B's BLAS calls work on vectors as long as the parameter vector (tens of entries), where a
    threaded OpenBLAS only pays for waking its pool: on a 2-core machine under load, 125 calls of scipy's
    ``setulb`` for 9 parameters took 1.35 s with 2 threads and 0.01 s with one (a 100x gap that dominated
    a whole small-n fit). Results are identical. Without threadpoolctl installed this does nothing.
    """
    if not _SCIPY_BLAS:
        try:
            from threadpoolctl import ThreadpoolController

            _SCIPY_BLAS.append(ThreadpoolController().select(prefix=["libscipy_openblas", "libopenblas"]))
        except Exception:  # threadpoolctl missing or unable to inspect the process: keep the default threads
            _SCIPY_BLAS.append(None)
    controller = _SCIPY_BLAS[0]
    if controller is None or not controller.lib_controllers:
        return contextlib.nullcontext()
    return controller.limit(limits=1)


def _run_scipy(run, mll, model, vec, data, maxiter, ftol, gtol, patience, bar) -> _Run:
    from scipy.optimize import minimize

    def objective(x):
        vec.set(x)
        for p in vec.params:
            p.grad = None
        try:
            loss = _full_loss(mll, model, data)
            loss.backward()
        except (NotPSDError, NonFiniteError) as err:
            if not math.isfinite(run.best_loss):
                raise  # the start itself is bad: handled by the caller (more jitter / another start)
            run.nfev += 1
            run.failed_points.append(f"{type(err).__name__}: {err}")
            # A failed trial point: report a high loss so the line search backtracks.
            return abs(run.best_loss) * 10 + 1e3, np.zeros_like(x)
        value = float(loss.detach())
        grad = vec.grad()
        run.record_eval(value)
        if not (math.isfinite(value) and np.all(np.isfinite(grad))):
            return abs(run.best_loss) * 10 + 1e3, np.zeros_like(x)
        return value, grad

    def callback(xk, *args):
        loss = run.best_loss
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.5g}")
        run.record_iteration(loss, ftol, patience)

    try:
        with _scipy_blas_one_thread():
            res = minimize(
                objective,
                vec.get(),
                jac=True,
                method="L-BFGS-B",
                callback=callback,
                options={"maxiter": maxiter, "ftol": ftol, "gtol": gtol, "maxfun": max(15000, 3 * maxiter)},
            )
        run.message = str(res.message)
        # scipy status: 0 converged (ftol/gtol), 1 iteration or evaluation limit, 2 line search stalled
        run.stop_reason = {0: "converged", 1: "maxiter"}.get(res.status, "stalled")
    except _Stop:
        pass
    return run


def _run_torch(run, mll, model, vec, data, optimizer, lr, maxiter, ftol, gtol, patience, bar) -> _Run:
    optimizers = _torch_optimizer(optimizer, vec.params, lr)
    uses_closure = any(isinstance(o, torch.optim.LBFGS) for o in optimizers)
    full_batch = data is None or (
        isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data)
    )

    def step(X, y) -> float:
        def closure():
            for o in optimizers:
                o.zero_grad()
            loss = _loss_on(mll, model, X, y)
            loss.backward()
            return loss

        if uses_closure:
            losses = [float(o.step(closure)) for o in optimizers]
            run.nfev += 1
            return losses[-1]
        loss = closure()
        for o in optimizers:
            o.step()
        run.nfev += 1
        return float(loss.detach())

    try:
        for _ in range(maxiter):
            if full_batch:
                X, y = (model.train_inputs[0], model.train_targets) if data is None else data
                before = vec.get()
                loss = step(X, y)
                grad_max = float(np.max(np.abs(vec.grad()))) if vec.params else 0.0
                if math.isfinite(loss) and loss < run.best_loss:
                    run.best_loss, run.best_x = loss, before
            else:
                losses = [step(X, y) for X, y in _batches(data)]
                loss = float(np.mean(losses))
                grad_max = math.inf
                if math.isfinite(loss) and loss < run.best_loss:
                    run.best_loss, run.best_x = loss, vec.get()
            if not math.isfinite(loss):
                raise NonFiniteError(
                    f"The loss became {loss} at iteration {run.nit}; lower the learning rate (lr={lr})."
                )
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.5g}")
            previous = run.history[-1] if run.history else math.inf
            run.record_iteration(loss, ftol, patience)
            if grad_max < gtol or (
                patience is None and abs(previous - loss) < ftol * max(1.0, abs(loss)) and full_batch
            ):
                run.stop_reason = "converged"
                break
    except _Stop:
        pass
    return run


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

    Returns:
        A :class:`FitResult`. The model holds the best parameters found, also after a
        ``KeyboardInterrupt`` (then ``stop_reason == "interrupted"``).

    Raises:
        InputError: no model behind ``mll``, no trainable parameters, or no data for a variational model.
        NotPSDError: every start failed even with more jitter (the message says how to fix it).
    """
    model = _model_of(mll)
    exact = _is_exact(model)
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
    blocks, loss_vector = None, None
    if scipy_opt and data is None and batch_independent is not False:

        def loss_vector():
            return -mll(model(*model.train_inputs), model.train_targets)

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
    name = "L-BFGS-B" if scipy_opt else _optimizer_name(optimizer)
    try:
        for start in range(restarts + 1):
            x_start = x0 if start == 0 else x0 + perturbation * generator.standard_normal(x0.shape)
            run = None
            jitter = settings.cholesky_jitter.value(params[0].dtype)
            for attempt in range(max_jitter_retries + 1):
                vec.set(x_start)
                run = _Run(vec)
                try:
                    # the library's warnings reach the user's filters unchanged and are also recorded here
                    with _record.recording() as wlist, settings.cholesky_jitter(jitter):
                        if blocks is not None:
                            with _scipy_blas_one_thread():
                                run_lockstep(run, vec, blocks, loss_vector, maxiter, ftol, gtol, patience, bar)
                        elif scipy_opt:
                            _run_scipy(run, mll, model, vec, data, maxiter, ftol, gtol, patience, bar)
                        else:
                            _run_torch(run, mll, model, vec, data, optimizer, lr, maxiter, ftol, gtol, patience, bar)
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
