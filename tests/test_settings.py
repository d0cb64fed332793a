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


@pytest.mark.parametrize("bad", [-1, None])
def test_invalid_values_rejected(bad):
    with pytest.raises(ValueError, match="max_cholesky_size must be >= 0"):
        settings.max_cholesky_size(bad)
    with pytest.raises(ValueError, match="cg_tolerance must be positive"):
        settings.cg_tolerance(0 if bad is None else bad)


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


# --------------------------------------------------------------------------- GPyTorch's settings, walked
def _gpytorch_settings():
    import inspect
    import warnings

    gpytorch = pytest.importorskip("gpytorch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gs = gpytorch.settings
    # ``Tensor`` is torch.Tensor imported into gpytorch.settings, not a setting
    return gs, sorted(n for n, v in vars(gs).items() if inspect.isclass(v) and v is not torch.Tensor)


def test_every_gpytorch_setting_class_exists():
    gs, names = _gpytorch_settings()
    missing = [n for n in names if not hasattr(settings, n)]
    assert not missing, f"torchgp.settings lacks GPyTorch's {missing}"


def _gpytorch_value_examples(gs, name):
    """Constructor calls GPyTorch accepts for the setting ``name``: (args, kwargs, what value() should read)."""
    cls = getattr(gs, name)
    base = [b.__name__ for b in cls.__mro__]
    if "_dtype_value_context" in base and name != "_dtype_value_context":
        return [
            ((), {"float_value": 1e-3, "double_value": 1e-7, "half_value": 1e-2}, (1e-3, 1e-7, 1e-2)),
            ((1e-3,), {}, None),
        ]
    if "_feature_flag" in base and name != "_feature_flag":
        return [((), {}, True), ((True,), {}, True), ((False,), {}, False), ((), {"state": False}, False)]
    if "_value_context" in base and name != "_value_context":
        default = cls._global_value
        examples = [((default,), {}, default)]
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            examples.append(((type(default)(default * 2),), {}, type(default)(default * 2)))
        return examples
    return []


def test_every_setting_accepts_gpytorchs_values_and_reads_them_back():
    gs, names = _gpytorch_settings()
    checked = 0
    for name in names:
        ours = getattr(settings, name, None)
        if ours is None:
            continue  # reported by test_every_gpytorch_setting_class_exists
        for args, kwargs, expected in _gpytorch_value_examples(gs, name):
            with ours(*args, **kwargs):
                if isinstance(expected, tuple):
                    got = tuple(ours.value(dt) for dt in (torch.float32, torch.float64, torch.float16))
                    assert got == expected, name
                elif expected is not None and hasattr(ours, "on"):
                    assert ours.on() is expected and ours.off() is (not expected), name
                elif expected is not None:
                    assert ours.value() == expected, name
            checked += 1
    assert checked > 60
    # the compound ones, with their keywords
    with settings.fast_computations(covar_root_decomposition=True, log_prob=False, solves=True):
        assert settings.max_cholesky_size.value() > 10**9
    with settings.linalg_dtypes(default=torch.float32, symeig=torch.float64, cholesky=None):
        assert settings._linalg_dtype_symeig.value() == torch.float64
        assert settings._linalg_dtype_cholesky.value() == torch.float32
    with settings.fast_pred_var(True, num_probe_vectors=2):
        assert settings.fast_pred_var.on()


def test_max_cholesky_size_zero_forces_the_iterative_path():
    model, X, y = make_model(n=40)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    exact = mll(model(X), y)
    with settings.max_cholesky_size(0), settings.cg_tolerance(1e-8), settings.num_trace_samples(64):
        approx = mll(model(X), y)
    assert not torch.equal(approx, exact)  # a different (stochastic) computation ...
    assert abs(approx.item() - exact.item()) < 0.05 * abs(exact.item()) + 0.05  # ... of the same quantity


def test_global_value_assignment_changes_the_default_and_with_blocks_still_win():
    cls = settings.max_cg_iterations
    old = cls._global_value
    try:
        cls._set_value(77)
        assert cls.value() == 77
        with cls(5):
            assert cls.value() == 5
        assert cls.value() == 77
    finally:
        cls._global_value = old
    assert cls.value() == old
    flag = settings.prior_mode
    assert flag.is_default()
    with flag(False):
        assert not flag.is_default()  # set by a block, even to the default value (as in GPyTorch)
    try:
        flag._set_state(True)
        assert flag.on() and not flag.is_default()
    finally:
        flag._set_state(False)
    jitter = settings.cholesky_jitter
    assert jitter._global_double_value == jitter.value(torch.float64)
    try:
        jitter._set_value(double_value=1e-5)
        assert jitter.value(torch.float64) == 1e-5 and jitter.value(torch.float32) == jitter._global_float_value
    finally:
        jitter._global_double_value = 1e-8


def test_gpytorch_base_class_names_are_the_setting_bases():
    assert issubclass(settings.debug, settings._feature_flag)
    assert issubclass(settings.max_cg_iterations, settings._value_context)
    assert issubclass(settings.cholesky_jitter, settings._dtype_value_context)
