"""Every benchmark takes ``--device`` and ``--threads``, and ``benchmarks/gpu.sh`` lists every benchmark."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if re.search(r"^def main\(", p.read_text(), re.MULTILINE))


def _options(path: Path) -> set[str]:
    """The option strings a script's argparse declares (``add_device_args`` declares ``--device`` and ``--threads``)."""
    options = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if name == "add_device_args":
            options |= {"--device", "--threads"}
        elif name == "add_argument":
            options |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return options


def test_the_benchmarks_are_found():
    assert len(SCRIPTS) >= 15 and BENCH / "exact_mll.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_takes_device_and_threads(script):
    missing = {"--device", "--threads"} - _options(script)
    assert not missing, f"{script.name} lacks {sorted(missing)}: use _common.add_device_args(parser)"


def test_gpu_sh_lists_every_benchmark():
    text = (BENCH / "gpu.sh").read_text()
    block = text[text.index("COMMANDS=(") : text.index("\n)\n")]
    listed = set(re.findall(r'^\s*"([a-z_0-9]+\.py)\|', block, re.MULTILINE))
    assert listed == {p.name for p in SCRIPTS}
    for line in re.findall(r'^\s*"(.*)"$', block, re.MULTILINE):
        assert line.count("|") == 2, f"gpu.sh entry {line!r} needs 'script|full sizes|quick sizes'"


def test_add_device_args_parses_device_and_threads():
    import argparse

    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    parser = common.add_device_args(argparse.ArgumentParser(), threads=2)
    a = parser.parse_args([])
    assert (a.device, a.threads) == ("cpu", 2)
    a = parser.parse_args(["--device", "cuda:1", "--threads", "4"])
    assert (a.device, a.threads) == ("cuda:1", 4)
