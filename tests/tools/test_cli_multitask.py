"""``torchgp fit`` with several ``--target`` columns (one multitask GP) and ``torchgp predict`` of its model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import torchgp
from torchgp.cli import main


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


@pytest.fixture
def multi_csv(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3, 30)
    a = np.sin(2 * x) + 0.05 * rng.standard_normal(30)
    b = 10 * np.sin(2 * x) + 5 + 0.3 * rng.standard_normal(30)
    return _write(tmp_path / "d.csv", ["x", "a", "b"], zip(x, a, b))


def _fit(multi_csv, out, *targets):
    args = ["fit", multi_csv, *[t for name in targets for t in ("--target", name)], "--out", str(out)]
    return main([*args, "--restarts", "0", "--max-iter", "40", "--no-plot", "--test-fraction", "0.2"])


@pytest.mark.parametrize("style", ["repeated", "comma"])
def test_fit_several_targets_and_predict_one_column_group_per_target(tmp_path, multi_csv, capsys, style):
    out = tmp_path / "out"
    targets = ("a", "b") if style == "repeated" else ("a,b",)
    assert _fit(multi_csv, out, *targets) == 0
    printed = capsys.readouterr().out
    assert "targets ['a', 'b']" in printed and "a: test RMSE" in printed and "b: test RMSE" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["targets"]) == {"a", "b"}
    assert metrics["targets"]["a"]["rmse"] < 0.3 and metrics["targets"]["b"]["rmse"] < 3.0
    model, meta, _ = torchgp.load(out / "model.safetensors", with_metadata=True)
    assert meta["targets"] == ["a", "b"] and type(model).__name__ == "MultitaskExactGPModel"
    pred = tmp_path / "pred.csv"
    assert main(["predict", str(out / "model.safetensors"), multi_csv, "--out", str(pred)]) == 0
    with open(pred) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[3:] == [f"{t}_{w}" for t in "ab" for w in ("mean", "std", "lower95", "upper95")]
    # the written columns are the model's predictions mapped back to each target's units
    X = torch.tensor([[float(r["x"])] for r in rows], dtype=torch.float64)
    Xn = (X - torch.tensor(meta["x_mean"], dtype=torch.float64)) / torch.tensor(meta["x_std"], dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        noisy = model.likelihood(model(Xn))
    y_std = torch.tensor(meta["y_std"], dtype=torch.float64)
    mean = noisy.mean * y_std + torch.tensor(meta["y_mean"], dtype=torch.float64)
    std = noisy.variance.sqrt() * y_std
    for j, t in enumerate("ab"):
        np.testing.assert_allclose([float(r[f"{t}_mean"]) for r in rows], mean[:, j].numpy(), rtol=1e-9)
        np.testing.assert_allclose([float(r[f"{t}_std"]) for r in rows], std[:, j].numpy(), rtol=1e-9)
        np.testing.assert_allclose(
            [float(r[f"{t}_upper95"]) - float(r[f"{t}_lower95"]) for r in rows], 2 * 1.959964 * std[:, j].numpy(),
            rtol=1e-8,
        )  # fmt: skip


def test_one_target_keeps_the_single_output_files(tmp_path, multi_csv):
    out = tmp_path / "one"
    assert _fit(multi_csv, out, "a") == 0
    _, meta, _ = torchgp.load(out / "model.safetensors", with_metadata=True)
    assert meta["target"] == "a" and "targets" not in meta


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--target", "zz"], "not in"),
        (["--task-rank", "3"], "--task-rank must be between 1 and the number of targets (2)"),
        (["--features", "x,b"], "also listed in --features"),
    ],
)
def test_bad_multitask_input_is_one_line_and_exit_status_2(tmp_path, multi_csv, capsys, extra, message):
    args = ["fit", multi_csv, "--target", "a", "--target", "b", "--out", str(tmp_path / "o"), "--no-plot", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
