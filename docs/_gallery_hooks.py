"""Hooks of the example gallery (sphinx-gallery), named by their dotted path in ``conf.py``."""

from __future__ import annotations

from pathlib import Path


def reset_argv(gallery_conf, script_vars) -> list[str]:
    """The command-line arguments an example runs with: ``--small`` where the example takes it (the CI size)."""
    return ["--small"] if "--small" in Path(script_vars["src_file"]).read_text(encoding="utf-8") else []
