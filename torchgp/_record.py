"""A context-local record of the library's warnings, for callers that report them (``fit``).

``warnings.catch_warnings`` swaps the process-wide filter list and is not thread-safe; instead,
library code that warns calls :func:`warn`, which warns as usual (the user's filters decide what
is shown) and also appends the message to every :func:`recording` active in the current thread or
asyncio task. Nothing global is changed.

Example:
    >>> import warnings
    >>> from torchgp import _record
    >>> with warnings.catch_warnings():  # only to keep this example quiet
    ...     warnings.simplefilter("ignore")
    ...     with _record.recording() as messages:
    ...         _record.warn("jitter added", RuntimeWarning)
    >>> messages
    ['jitter added']
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings

_SINKS: contextvars.ContextVar[tuple[list[str], ...]] = contextvars.ContextVar("torchgp_warning_sinks", default=())


def warn(message, category: type[Warning] = UserWarning, stacklevel: int = 1) -> None:
    """``warnings.warn(message, category, stacklevel)``, also recorded by the active :func:`recording` blocks."""
    for sink in _SINKS.get():
        sink.append(str(message))
    warnings.warn(message, category, stacklevel=stacklevel + 1)


def note(message: str) -> None:
    """Record ``message`` in the active :func:`recording` blocks without warning."""
    for sink in _SINKS.get():
        sink.append(str(message))


@contextlib.contextmanager
def recording():
    """Collect the messages passed to :func:`warn` inside the block (this thread/task only) into a list."""
    sink: list[str] = []
    token = _SINKS.set((*_SINKS.get(), sink))
    try:
        yield sink
    finally:
        _SINKS.reset(token)
