"""One thread for tests of small matrices, without touching ``torch.set_num_threads``.

Small dense problems run fastest (and time stably on a shared 2-core machine) with one thread. Lowering
and then restoring torch's own thread count breaks batched ``torch.linalg.solve`` for the rest of the
process in this PyTorch build ("Pivots given to lu_solve must all be greater or equal to 1"), so the
OpenMP and BLAS pools are limited through threadpoolctl instead.
"""

from __future__ import annotations

import contextlib

from threadpoolctl import threadpool_limits


@contextlib.contextmanager
def one_thread():
    """Limit OpenMP/BLAS pools to one thread inside the block."""
    with threadpool_limits(1):
        yield
