"""The example gallery (sphinx-gallery, ``docs/conf.py``) renders every ``examples/*.py``: each needs a titled docstring."""

from __future__ import annotations

import ast
import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def _conf() -> dict:
    """The namespace of docs/conf.py (it imports torchgp, nothing of Sphinx)."""
    return runpy.run_path(str(ROOT / "docs" / "conf.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_has_a_gallery_header(path):
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False)
    assert doc, f"{path.name} needs a module docstring: a title underlined with '=', then a paragraph"
    lines = doc.strip("\n").splitlines()
    assert len(lines) >= 3 and set(lines[1]) == {"="} and len(lines[1]) >= len(lines[0].rstrip()), (
        f"{path.name}: the docstring must start with a title line underlined by '=' of the same length "
        f"(sphinx-gallery's header); it starts {lines[:2]}"
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_executed_by_the_gallery_unless_listed(path):
    conf = _conf()
    gallery, not_executed = conf["sphinx_gallery_conf"], conf["GALLERY_NOT_EXECUTED"]
    assert gallery["examples_dirs"] == "../examples" and not re.search(gallery["ignore_pattern"], path.name)
    executed = re.search(gallery["filename_pattern"], "/" + path.name) is not None
    assert executed == (path.name not in not_executed), (path.name, gallery["filename_pattern"])


def test_the_pattern_runs_a_new_example():
    pattern = _conf()["sphinx_gallery_conf"]["filename_pattern"]
    assert re.search(pattern, "/some_new_example.py") and not re.search(pattern, "/deep_kernel_learning.py")


def test_the_argv_hook_passes_small_only_to_examples_that_take_it(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from _gallery_hooks import reset_argv
    finally:
        sys.path.remove(str(ROOT / "docs"))
    takes, ignores = tmp_path / "a.py", tmp_path / "b.py"
    takes.write_text('parser.add_argument("--small")\n')
    ignores.write_text("print(1)\n")
    assert reset_argv({}, {"src_file": str(takes)}) == ["--small"]
    assert reset_argv({}, {"src_file": str(ignores)}) == []
