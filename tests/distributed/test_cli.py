"""``torchgp fit ... --distributed`` under torchrun: the same fit as one process, rank 0 alone reports."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import pytest

from torchgp.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _csv(path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x", "y"])
        for i in range(40):
            x = i / 10
            w.writerow([x, math.sin(2 * x) + 0.05 * math.cos(7 * i)])
    return str(path)


def test_distributed_fit_under_torchrun_matches_one_process(tmp_path, capsys):
    data = _csv(tmp_path / "data.csv")
    flags = ["--target", "y", "--max-iter", "5", "--restarts", "0", "--no-plot"]
    assert main(["fit", data, "--out", str(tmp_path / "one"), *flags]) == 0
    capsys.readouterr()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "torchgp"]
    proc = subprocess.run(
        [*cmd, "fit", data, "--out", str(tmp_path / "two"), *flags, "--distributed"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("model saved to") == 1  # rank 0 alone prints
    one = json.load(open(tmp_path / "one" / "metrics.json"))
    two = json.load(open(tmp_path / "two" / "metrics.json"))
    for key in ("train_mll", "rmse", "nlpd"):
        assert two[key] == pytest.approx(one[key], rel=1e-6)
    # The saved model is a one-process model: `torchgp predict` reads it without a process group.
    assert main(["predict", str(tmp_path / "two" / "model.safetensors"), data, "--out", str(tmp_path / "p.csv")]) == 0
