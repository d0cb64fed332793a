import csv
import subprocess
import sys

import numpy as np
import pytest

from torchgp.cli import main


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


@pytest.fixture
def data_csv(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 6, 60)
    z = rng.uniform(0, 1, 60)
    y = np.sin(x) + 0.5 * z + 0.05 * rng.standard_normal(60)
    return write_csv(tmp_path / "data.csv", ["x", "z", "y"], zip(x, z, y))


def test_fit_and_predict_end_to_end(tmp_path, data_csv, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "fit",
                data_csv,
                "--target",
                "y",
                "--features",
                "x,z",
                "--kernel",
                "rbf + linear",
                "--out",
                str(out),
                "--restarts",
                "1",
                "--max-iter",
                "100",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    for expected in ("learned hyperparameters", "training log marginal likelihood", "test RMSE", "NLPD", "coverage"):
        assert expected in text
    rmse = float(text.split("test RMSE:")[1].split()[0])
    assert rmse < 0.2
    assert (out / "model.safetensors").exists() and (out / "fit.png").stat().st_size > 1000
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(out / "model.safetensors"), data_csv, "--out", str(preds)]) == 0
    rows = list(csv.DictReader(open(preds)))
    assert len(rows) == 60 and {"mean", "std", "lower95", "upper95"} <= set(rows[0])
    err = [abs(float(r["mean"]) - float(r["y"])) for r in rows]
    assert np.mean(err) < 0.2
    assert all(float(r["lower95"]) < float(r["mean"]) < float(r["upper95"]) for r in rows)


def test_one_feature_plot_and_default_features(tmp_path, data_csv):
    assert (
        main(["fit", data_csv, "--target", "y", "--features", "x", "--out", str(tmp_path / "a"), "--restarts", "0"])
        == 0
    )
    assert (tmp_path / "a" / "fit.png").exists() and (tmp_path / "a" / "training.png").exists()
    assert main(["fit", data_csv, "--target", "y", "--out", str(tmp_path / "b"), "--no-plot", "--restarts", "0"]) == 0
    assert not (tmp_path / "b" / "fit.png").exists()


def bad(tmp_path, header, rows):
    return write_csv(tmp_path / "bad.csv", header, rows)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_column", "'w' not in"),
        ("missing_target", "target column 'q' not in"),
        ("non_numeric", "not numeric: row 3 holds 'abc'"),
        ("nan_rows", "pass --dropna"),
        ("empty", "is empty"),
        ("header_only", "no data rows"),
        ("no_file", "no such file"),
    ],
)
def test_bad_input_gives_a_clear_error(tmp_path, capsys, case, message):
    rows = [[i, i * 0.5, np.sin(i)] for i in range(10)]
    path = bad(tmp_path, ["x", "z", "y"], rows)
    argv = ["fit", path, "--target", "y", "--out", str(tmp_path / "o"), "--no-plot"]
    if case == "missing_column":
        argv += ["--features", "x,w"]
    elif case == "missing_target":
        argv[3] = "q"
    elif case == "non_numeric":
        rows[1][1] = "abc"
        bad(tmp_path, ["x", "z", "y"], rows)
    elif case == "nan_rows":
        rows[2][0] = ""
        rows[4][2] = "nan"
        bad(tmp_path, ["x", "z", "y"], rows)
    elif case == "empty":
        (tmp_path / "bad.csv").write_text("")
    elif case == "header_only":
        (tmp_path / "bad.csv").write_text("x,z,y\n")
    elif case == "no_file":
        argv[1] = str(tmp_path / "nope.csv")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_dropna_drops_the_rows(tmp_path, capsys):
    rows = [[i / 3, np.sin(i / 3)] for i in range(30)]
    rows[3][0] = "NA"
    rows[7][1] = ""
    path = write_csv(tmp_path / "nan.csv", ["x", "y"], rows)
    assert (
        main(["fit", path, "--target", "y", "--dropna", "--out", str(tmp_path / "o"), "--no-plot", "--restarts", "0"])
        == 0
    )
    assert "28 rows" in capsys.readouterr().out


def test_predict_errors(tmp_path, data_csv, capsys):
    assert main(["predict", str(tmp_path / "none.safetensors"), data_csv]) == 2
    assert "no model file" in capsys.readouterr().err


def test_demo_quick(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "test RMSE" in text and (tmp_path / "co2.png").exists() and (tmp_path / "co2_model.safetensors").exists()
    rmse = float(text.split("test RMSE:")[1].split()[0])
    assert rmse < 5.0  # ppm, over 7 years of extrapolation
    coverage = float(text.split("95% interval coverage:")[1].split("%")[0])
    assert coverage >= 90.0  # calibrated intervals (73% before the correlated-noise term and α ≥ 0.1)


def test_help_in_a_subprocess():
    done = subprocess.run(
        [sys.executable, "-m", "torchgp", "fit", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for option in ("--target", "--features", "--kernel", "--out", "--test-fraction", "--dropna", "--seed"):
        assert option in done.stdout
