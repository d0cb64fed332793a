import matplotlib
import pytest

from tests._threads import one_thread

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _one_thread():
    """Small dense problems run fastest (and timings are stable on a shared 2-core machine) with one thread."""
    with one_thread():
        yield
