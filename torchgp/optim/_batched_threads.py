r"""The lockstep's fallback where scipy's L-BFGS-B core cannot be driven directly: one worker thread per model.

Each model's :func:`scipy.optimize.minimize` runs in its own thread and asks for values through its objective;
the calling thread waits until every live optimiser has asked, evaluates them all in one batched pass and
hands each its own answer (:mod:`torchgp.optim._batched` does the evaluating). The iterates are those of
:class:`~torchgp.optim._lbfgsb.LBFGSB`, which needs no threads, wherever that is available.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import numpy as np

from torchgp.optim._scipy_runner import lbfgsb_options


class _Lockstep:
    """The rendezvous between the B optimiser threads and the evaluating thread.

    Requests travel on one queue to the evaluating thread; each worker waits on its own event for its
    answer, so a round wakes each thread once (one shared condition would wake all B per request).
    """

    def __init__(self, B: int):
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()  # (i, x) asks, (i, None) when worker i ends
        self.ready = [threading.Event() for _ in range(B)]
        self.results: list[tuple[float, np.ndarray] | None] = [None] * B
        self.alive = set(range(B))
        self.abort = False

    def ask(self, i: int, x: np.ndarray) -> tuple[float, np.ndarray]:
        self.inbox.put((i, x))
        self.ready[i].wait()
        self.ready[i].clear()
        if self.abort:
            raise _Abort
        return self.results[i]

    def done(self, i: int) -> None:
        self.inbox.put((i, None))

    def gather(self) -> dict[int, np.ndarray]:
        """The next round's requests: wait until every live worker has asked or ended."""
        asked: dict[int, np.ndarray] = {}
        while self.alive - asked.keys():
            i, x = self.inbox.get()
            if x is None:
                self.alive.discard(i)
            else:
                asked[i] = x
        return asked

    def answer(self, answers: dict[int, tuple[float, np.ndarray]]) -> None:
        for i, result in answers.items():
            self.results[i] = result
            self.ready[i].set()

    def stop(self) -> None:
        self.abort = True
        for event in self.ready:
            event.set()


class _Abort(Exception):
    """Raised in a worker when the evaluating thread gave up (an error to re-raise there)."""


class _Stop(Exception):
    """Raised in a worker's callback to end its run (patience exhausted)."""


def run_threads(
    models: list,
    evaluate: Callable[[dict[int, np.ndarray]], dict[int, tuple[float, np.ndarray]]],
    iteration: Callable[[int], bool],
    maxiter: int,
    ftol: float,
    gtol: float,
) -> None:
    """Run one ``minimize(method="L-BFGS-B")`` per model in a worker thread, evaluating each round together.

    Args:
        models: the lockstep's per-model records (``x`` the start ``(p_i,)``; ``status``, ``message`` and
            ``error`` are filled here).
        evaluate: ``{i: x_i}`` of the models asking this round → ``{i: (loss_i, grad_i (p_i,))}``.
        iteration: called with ``i`` after each iteration of model ``i``; True ends that model's run.
        maxiter, ftol, gtol: L-BFGS-B's options (:func:`~torchgp.optim._scipy_runner.lbfgsb_options`).

    Raises:
        Whatever ``evaluate`` raised (the workers are stopped and joined first), else the first error a
        worker's optimiser raised.
    """
    from scipy.optimize import minimize

    rendezvous = _Lockstep(len(models))

    def worker(i: int) -> None:
        m = models[i]

        def objective(x):
            return rendezvous.ask(i, np.array(x, dtype=np.float64))

        def callback(xk, *args):
            if iteration(i):
                raise _Stop

        try:
            res = minimize(
                objective, m.x, jac=True, method="L-BFGS-B", callback=callback,
                options=lbfgsb_options(maxiter, ftol, gtol),
            )  # fmt: skip
            m.message = str(res.message)
            m.status = {0: "converged", 1: "maxiter"}.get(res.status, "stalled")
        except (_Stop, _Abort):
            pass
        except BaseException as err:  # surfaced by the evaluating thread
            m.error = err
        finally:
            rendezvous.done(i)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(models))]
    for t in threads:
        t.start()
    try:
        while True:
            asked = rendezvous.gather()
            if not asked:
                break
            rendezvous.answer(evaluate(asked))
    except BaseException:
        rendezvous.stop()
        raise
    finally:
        for t in threads:
            t.join()
    for m in models:
        if m.error is not None:
            raise m.error
