"""Progress bars for slow loops, shown only when the loop is predicted to take more than ~10 s.

A loop of known length reports each step to :func:`progress`'s object; after each step the time per
step so far predicts the whole loop (``elapsed / done · total``), and once that prediction exceeds
:data:`THRESHOLD_S` (and the loop has run :data:`MIN_ELAPSED_S`) a tqdm bar appears, starting at the
steps already done. So a fast loop never prints anything, and a slow one shows it is moving within a
few steps. For a loop that may stop early (CG at its tolerance) ``total`` is the cap, and the
prediction an upper bound.

Whether bars may appear at all: ``settings.progress_bars`` ('auto', 'always', 'never'; default from
the ``TORCHGP_PROGRESS`` environment variable, else 'auto'). 'auto' shows them only when stderr is a
terminal and tqdm is installed; 'always' shows every gated loop's bar, whatever its cost, on stderr
(also when it is not a terminal); 'never' turns them off.

Example:
    >>> from torchgp import _progress
    >>> bar = _progress.progress(100, "blocks")  # a no-op unless the loop turns out slow
    >>> for _ in range(100):
    ...     bar.update()
    >>> bar.close()
"""

from __future__ import annotations

import os
import sys
import time

from torchgp import settings

THRESHOLD_S = 10.0  # a loop predicted to take longer than this shows a bar
MIN_ELAPSED_S = 1.0  # ... once it has run this long: a loop that ends early (CG converging) never flashes one
ENV = "TORCHGP_PROGRESS"  # 'auto' | 'always' | 'never' (also 1/on, 0/off)
_ALIASES = {"1": "always", "on": "always", "true": "always", "0": "never", "off": "never", "false": "never"}
_clock = time.perf_counter


def mode() -> str:
    """The current mode: ``settings.progress_bars`` if set, else ``$TORCHGP_PROGRESS``, else 'auto'."""
    value = settings.progress_bars.value()
    if value is None:
        raw = os.environ.get(ENV, "auto").strip().lower()
        value = _ALIASES.get(raw, raw)
        if value not in ("auto", "always", "never"):
            value = "auto"
    return value


def _tty(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (ValueError, OSError):  # a closed stream
        return False


class _NoProgress:
    """What :func:`progress` returns when no bar can appear: every call does nothing."""

    __slots__ = ()

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc) -> bool:
        return False


_NULL = _NoProgress()


class Progress:
    """A loop of ``total`` steps that shows a tqdm bar once it is predicted to take over ``threshold_s``.

    Args:
        total: number of steps of the loop.
        desc: the bar's label.
        unit: the bar's unit.
        predicted_s: a prediction of the loop's time known in advance (seconds), or None.
        threshold_s: the predicted time above which the bar appears (0: at once).
        stream: where the bar is written (default ``sys.stderr`` at construction).
    """

    def __init__(self, total: int, desc: str, unit: str = "it", predicted_s=None, threshold_s=THRESHOLD_S, stream=None):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.threshold_s = threshold_s
        self.stream = sys.stderr if stream is None else stream
        self.done = 0
        self.bar = None
        self.start = _clock()
        if threshold_s <= 0 or (predicted_s is not None and predicted_s > threshold_s):
            self._open()

    def _open(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=self.total, initial=self.done, desc=self.desc, unit=self.unit, file=self.stream, leave=False
        )

    def predicted_s(self) -> float:
        """The loop's predicted total time: time per step so far times ``total`` (inf before the first step)."""
        if self.done == 0:
            return float("inf")
        return (_clock() - self.start) / self.done * self.total

    def update(self, n: int = 1) -> None:
        """Report ``n`` more steps done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif (
            self.done < self.total
            and _clock() - self.start >= min(MIN_ELAPSED_S, self.threshold_s)
            and self.predicted_s() > self.threshold_s
        ):
            self._open()

    def close(self) -> None:
        """End the loop (removes the bar if one was shown)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def progress(total: int, desc: str, unit: str = "it", predicted_s: float | None = None):
    """A :class:`Progress` for a loop of ``total`` steps, or a no-op when no bar may appear.

    No bar for loops of one step, under mode 'never', or under 'auto' when stderr is not a terminal
    or tqdm is missing; under 'always' the bar appears at once.

    Args:
        total: number of steps.
        desc: the bar's label.
        unit: the bar's unit.
        predicted_s: the loop's predicted time in seconds, if known in advance.

    Returns:
        An object with ``update(n=1)`` and ``close()``.
    """
    if total <= 1:
        return _NULL
    current = mode()
    if current == "never":
        return _NULL
    if current == "always":
        return Progress(total, desc, unit, predicted_s, threshold_s=0.0)
    if not _tty(sys.stderr) or not _tqdm_available():
        return _NULL
    return Progress(total, desc, unit, predicted_s)


def _tqdm_available() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return False
    return True
