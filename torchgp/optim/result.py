r"""``FitResult``: what one call of :func:`torchgp.fit` did (losses, counts, stop reason, warnings)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FitResult"]


@dataclass
class FitResult:
    """What happened during :func:`~torchgp.optim.fit.fit`.

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
        """True when the fit ended normally (converged, maxiter, patience or stalled at the optimum)."""
        return self.stop_reason in ("converged", "maxiter", "patience", "stalled")

    def __str__(self) -> str:
        return (
            f"FitResult({self.optimizer}: loss {self.loss:.6g}, {self.stop_reason}, {self.iterations} iterations, "
            f"{self.function_evals} evaluations, {self.time:.2f} s, {len(self.restart_losses)} start(s), "
            f"{len(self.warnings)} warning(s))"
        )
