"""Progress bars: shown for loops predicted to be slow, on a terminal, unless turned off."""

from __future__ import annotations

import io

import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.models._models import make_model
from torchgp import _progress
from torchgp.linalg.cg import pcg


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _FakeClock:
    def __init__(self, step_s: float):
        self.t, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        return self.t

    def tick(self) -> None:
        self.t += self.step_s


def _run_loop(total, clock=None, desc="work"):
    bar = _progress.progress(total, desc)
    shown = False
    for _ in range(total):
        if clock is not None:
            clock.tick()
        bar.update()
        shown = shown or getattr(bar, "bar", None) is not None
    bar.close()
    return bar, shown


def _use_terminal(monkeypatch) -> _Terminal:
    """stderr as a terminal (set inside the test: pytest restores its own stderr after fixtures)."""
    stream = _Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.delenv(_progress.ENV, raising=False)
    return stream


def test_auto_shows_a_bar_only_when_predicted_slow(monkeypatch):
    terminal = _use_terminal(monkeypatch)
    slow = _FakeClock(step_s=3.0)  # 10 steps of 3 s: predicted 30 s > 10 s
    monkeypatch.setattr(_progress, "_clock", slow)
    _, shown = _run_loop(10, slow, desc="slow work")
    assert shown and "slow work" in terminal.getvalue()
    terminal.seek(0)
    terminal.truncate()
    fast = _FakeClock(step_s=0.5)  # predicted 5 s: no bar
    monkeypatch.setattr(_progress, "_clock", fast)
    bar, shown = _run_loop(10, fast)
    assert not shown and terminal.getvalue() == ""
    assert bar.predicted_s() == pytest.approx(5.0)


def test_a_known_prediction_opens_the_bar_at_once(monkeypatch):
    terminal = _use_terminal(monkeypatch)
    bar = _progress.progress(4, "known", predicted_s=60.0)
    assert bar.bar is not None
    bar.close()
    assert "known" in terminal.getvalue()


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    monkeypatch.delenv(_progress.ENV, raising=False)
    slow = _FakeClock(step_s=100.0)
    monkeypatch.setattr(_progress, "_clock", slow)
    bar, shown = _run_loop(10, slow)
    assert isinstance(bar, _progress._NoProgress) and not shown
    assert capsys.readouterr().err == ""


def test_never_and_always(monkeypatch):
    terminal = _use_terminal(monkeypatch)
    slow = _FakeClock(step_s=100.0)
    monkeypatch.setattr(_progress, "_clock", slow)
    with torchgp.settings.progress_bars("never"):
        bar, _ = _run_loop(10, slow)
    assert isinstance(bar, _progress._NoProgress) and terminal.getvalue() == ""
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal: 'always' still shows the bar
    with torchgp.settings.progress_bars("always"):
        _, shown = _run_loop(3, desc="forced")
    assert shown


def test_environment_variable(monkeypatch):
    monkeypatch.setenv(_progress.ENV, "0")
    assert _progress.mode() == "never"
    monkeypatch.setenv(_progress.ENV, "always")
    assert _progress.mode() == "always"
    with torchgp.settings.progress_bars("auto"):  # the setting wins over the environment
        assert _progress.mode() == "auto"
    monkeypatch.setenv(_progress.ENV, "bogus")
    assert _progress.mode() == "auto"
    with pytest.raises(ValueError, match="'auto', 'always' or 'never'"):
        torchgp.settings.progress_bars("sometimes")


def test_prediction_blocks_report_progress_and_predictions_are_unchanged(capsys):
    model, _, _ = make_model(n=10)
    model.eval()
    Xs = torch.linspace(-2, 2, 9, dtype=torch.float64).unsqueeze(-1)
    ref = model(Xs)
    ref_mean, ref_var = ref.mean, ref.variance
    capsys.readouterr()
    with torchgp.settings.progress_bars("always"), torchgp.settings.prediction_block_size(30):  # 3 rows a block
        out = model(Xs)
        mean, var = out.mean, out.variance
    err = capsys.readouterr().err
    assert "torchgp: predicting" in err and "0/3" in err  # three blocks of test points
    assert_close(mean, ref_mean)
    assert_close(var, ref_var)


def test_cg_reports_progress_and_solves_the_same(capsys):
    g = torch.Generator().manual_seed(0)
    A0 = torch.randn(12, 12, generator=g, dtype=torch.float64)
    A = A0 @ A0.mT + 12 * torch.eye(12, dtype=torch.float64)
    B = torch.randn(12, 2, generator=g, dtype=torch.float64)
    with torchgp.settings.progress_bars("always"):
        X, info = pcg(lambda V: A @ V, B, tol=1e-10)
    assert "torchgp: conjugate gradients" in capsys.readouterr().err
    assert_close(X, torch.linalg.solve(A, B), loose=1e3)
    assert info.converged.all()
