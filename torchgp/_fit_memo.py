"""The memo of one optimiser run: what depends only on the model's structure is worked out once per run.

:func:`fit_scope` opens a run (:func:`torchgp.fit` opens one per start), :func:`fit_memoised` reads or fills
an entry of it. The names are documented with :mod:`torchgp.module`, which re-exports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["fit_scope", "fit_memo", "fit_memoised"]

# the memo of the optimiser run in progress (``fit_scope()``), else None
_FIT_MEMO: ContextVar[dict | None] = ContextVar("torchgp_fit_memo", default=None)


@contextmanager
def fit_scope() -> Iterator[dict]:
    """One optimiser run, over which the model's structure is fixed: :func:`fit_memo` returns one dict throughout.

    During :func:`torchgp.fit` the optimiser changes parameter values and nothing else: the modules, their
    priors and added loss terms, the training data stay the same objects. What depends on that structure alone
    (which modules hold priors, that the targets have the right shape) is then worked out at the run's first
    evaluation and reused by the later ones. Each entry is keyed on the identity of the objects it describes,
    and the memo ends with the run, so nothing can go stale across runs.
    """
    memo: dict = {}
    token = _FIT_MEMO.set(memo)
    try:
        yield memo
    finally:
        _FIT_MEMO.reset(token)


def fit_memo() -> dict | None:
    """The current run's memo (see :func:`fit_scope`), or ``None`` outside one: then compute everything."""
    return _FIT_MEMO.get()


def fit_memoised(key, deps: tuple, compute):
    """``compute()``, once per run of :func:`fit_scope` for the same ``deps`` (compared by identity); every call
    outside a run. ``key`` names the entry (e.g. ``("walk", id(owner))``)."""
    memo = _FIT_MEMO.get()
    if memo is None:
        return compute()
    hit = memo.get(key)
    if hit is not None and len(hit[0]) == len(deps) and all(a is b for a, b in zip(hit[0], deps)):
        return hit[1]
    value = compute()
    memo[key] = (deps, value)
    return value
