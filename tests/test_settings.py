"""Settings are context managers local to the thread that sets them."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.models._models import make_model
from torchgp import settings


def test_context_manager_sets_and_restores():
    default = settings.max_cholesky_size.value()
    with settings.max_cholesky_size(10):
        assert settings.max_cholesky_size.value() == 10
        with settings.max_cholesky_size(3):
            assert settings.max_cholesky_size.value() == 3
        assert settings.max_cholesky_size.value() == 10
    assert settings.max_cholesky_size.value() == default


def test_restored_after_exception():
    with pytest.raises(RuntimeError):
        with settings.debug(False):
            assert settings.debug.off()
            raise RuntimeError
    assert settings.debug.on()


def test_dtype_values():
    assert settings.cholesky_jitter.value(torch.float32) == 1e-6
    assert settings.cholesky_jitter.value(torch.float64) == 1e-8
    with settings.cholesky_jitter(1e-3):
        assert settings.cholesky_jitter.value(torch.float32) == settings.cholesky_jitter.value(torch.float64) == 1e-3
    with settings.cholesky_jitter(float_value=1e-4, double_value=1e-9):
        assert settings.cholesky_jitter.value(torch.float32) == 1e-4
        assert settings.cholesky_jitter.value(torch.float64) == 1e-9


@pytest.mark.parametrize("bad", [0, -1, None])
def test_invalid_values_rejected(bad):
    with pytest.raises(ValueError, match="max_cholesky_size must be positive"):
        settings.max_cholesky_size(bad)


def test_fast_computations_forces_cholesky():
    with settings.fast_computations(log_prob=False):
        assert settings.max_cholesky_size.value() >= 2**62
    assert settings.max_cholesky_size.value() == 4096
    with settings.fast_computations():
        assert settings.max_cholesky_size.value() == 4096


def test_with_block_in_one_thread_never_changes_another():
    inside, entered, done = [], threading.Event(), threading.Event()

    def setter():
        with settings.max_cholesky_size(7), settings.debug(False):
            entered.set()
            done.wait(5)
            inside.append(settings.max_cholesky_size.value())

    def reader():
        entered.wait(5)
        inside.append((settings.max_cholesky_size.value(), settings.debug.on()))
        done.set()

    threads = [threading.Thread(target=setter), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (4096, True) in inside and 7 in inside
    assert settings.max_cholesky_size.value() == 4096


def test_main_thread_setting_not_seen_by_worker():
    with settings.max_cholesky_size(5):
        with ThreadPoolExecutor(1) as ex:
            assert ex.submit(settings.max_cholesky_size.value).result() == 4096


def test_one_instance_entered_in_two_threads():
    cm = settings.max_cholesky_size(11)
    barrier = threading.Barrier(2)
    seen, errors = [], []

    def work():
        try:
            with cm:
                barrier.wait(5)
                seen.append(settings.max_cholesky_size.value())
                barrier.wait(5)
            seen.append(settings.max_cholesky_size.value())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(seen) == [11, 11, 4096, 4096]


def test_concurrent_predictions_are_safe():
    model, _, _ = make_model(n=30)
    model.eval()
    Xs = [torch.randn(5, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    with torch.no_grad():
        expected = [model(x).mean for x in Xs]
    model._cache = None
    barrier = threading.Barrier(4)

    def predict(i):
        barrier.wait(5) if i < 4 else None
        with torch.no_grad(), settings.max_cholesky_size(1000 + i):
            return model(Xs[i]).mean

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(predict, range(8)))
    for r, e in zip(results, expected):
        assert_close(r, e)


def test_settings_change_the_computation():
    """skip_posterior_variances and min_variance are read where they act."""
    model, _, _ = make_model()
    model.eval()
    x = torch.randn(3, 1, dtype=torch.float64)
    with settings.skip_posterior_variances():
        assert torch.all(model(x).variance == 0)
    with settings.min_variance(10.0):
        assert torch.all(model(x).variance == 10.0)
    assert torchgp.settings.debug.on()


def test_one_setting_instance_entered_from_two_threads_at_once():
    import threading

    from torchgp import settings

    ctx = settings.max_cholesky_size(7)
    barrier = threading.Barrier(2)
    inside, after, errors = [], [], []

    def work():
        try:
            with ctx:
                barrier.wait()  # both threads are inside the same instance's block
                inside.append(settings.max_cholesky_size.value())
                barrier.wait()
            after.append(settings.max_cholesky_size.value())
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert inside == [7, 7]
    assert after == [settings.max_cholesky_size._default] * 2
