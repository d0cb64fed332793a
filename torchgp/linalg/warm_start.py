r"""Warm starts for the iterative marginal likelihood: the last CG solutions, keyed by the training inputs.

Lin et al. (2024, "Improving linear system solvers for hyperparameter optimisation in iterative Gaussian
processes", §3) start each optimiser step's solves ``K_θ⁻¹[r, z₁..z_t]`` from the previous step's
solutions: the hyperparameters move little between steps, so the old solutions are close and CG needs
fewer iterations. A warm start never changes the answer (CG stops on the true relative residual
``‖b - K x‖ / ‖b‖``), only its cost; still, a start is offered only for the same system family: the same
training inputs (compared bit for bit with :func:`torchgp._state.state_key`, so an in-place change of the
data invalidates it), the same kernel class, number of right-hand sides and probes, dtype, device and batch
shape. The probes ``z = L ε₁ + D^{1/2} ε₂`` move with the preconditioner but keep their Rademacher draws ``ε``
(fixed under ``settings.deterministic_probes``); without fixed probes only the data columns are warm-started.

The probes depend on the preconditioner's factor ``L``, whose greedy pivots can come in another order after a
small step (then ``L``'s columns, and the probes, jump); so the pivots are kept with the solutions and reused,
which makes ``L`` and the probes move smoothly with the hyperparameters (Lin et al. §4 fix the probes likewise).

The cache holds the solutions and pivots of the last :data:`MAX_ENTRIES` systems, ``(*batch, n, k + t)`` each.
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp._state import StateKey, state_key
from torchgp.linalg.operators import KernelOperator, Operator

__all__ = ["MAX_ENTRIES", "WarmStartCache", "system_key", "cache"]

MAX_ENTRIES = 2


def system_key(base: Operator, k: int, t: int, batch: torch.Size, dtype: torch.dtype) -> StateKey | None:
    """The key of the systems ``(base + diag) X = [r (k columns), z (t columns)]``, or None (no warm start).

    Only a :class:`~torchgp.linalg.operators.KernelOperator` has a key: its inputs identify the training set
    across hyperparameter values (a dense matrix's values change with them).
    """
    if not isinstance(base, KernelOperator):
        return None
    x2 = None if base.x2 is base.x1 else base.x2
    meta = (type(base.kernel).__qualname__, int(k), int(t), tuple(batch), dtype, tuple(base.shape))
    return state_key(None, base.x1, x2, settings=meta)


class WarmStartCache:
    """The last solutions per :func:`system_key`, most recent first (at most ``max_entries``).

    Attributes:
        hits, misses: how many :meth:`get` calls found (did not find) a start.
    """

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._entries: list[tuple[StateKey, torch.Tensor, torch.Tensor | None]] = []
        self.hits = self.misses = 0

    def get(self, key: StateKey | None, k: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(X, pivots)`` stored for ``key`` (``(*batch, n, k + t)``, ``(*batch, rank)``), or ``(None, None)``.

        Without fixed probes the probe columns of ``X`` are zeros (old solutions are no start for new probes).
        """
        if key is None or not settings.cg_warm_start.on():
            return None, None
        for i, (stored, X, pivots) in enumerate(self._entries):
            if stored == key:
                self.hits += 1
                self._entries.insert(0, self._entries.pop(i))
                if not settings.deterministic_probes.on():
                    X = X.clone()
                    X[..., k:] = 0
                return X, pivots
        self.misses += 1
        return None, None

    def put(self, key: StateKey | None, X: torch.Tensor, pivots: torch.Tensor | None) -> None:
        """Store ``X`` (detached) and the preconditioner's pivots under ``key``, keeping ``max_entries`` at most."""
        if key is None or not settings.cg_warm_start.on():
            return
        self._entries = [e for e in self._entries if e[0] != key]
        self._entries.insert(0, (key, X.detach(), pivots))
        del self._entries[self.max_entries :]

    def clear(self) -> None:
        """Forget every stored solution (and reset the counters)."""
        self._entries.clear()
        self.hits = self.misses = 0


cache = WarmStartCache()
