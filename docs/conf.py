"""Sphinx configuration of torchgp's documentation: the API reference (autodoc + napoleon) and the Markdown guides (MyST)."""

from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("."))  # docs/_gallery_hooks.py

import torchgp  # noqa: E402

project = "torchgp"
author = "torchgp contributors"
release = version = torchgp.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "gallery/*.ipynb", "gallery/*.py", "gallery/*.zip"]

# Google-style docstrings (Args / Returns / Raises / Shapes / Example), as the code writes them
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = ["Shapes"]  # shown as written, under its own heading
napoleon_use_rtype = False

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autoclass_content = "both"

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = "torchgp"


# The example gallery: every examples/*.py (a new file is picked up by the pattern) is run at its CI size
# (--small, see _gallery_hooks.py) and rendered with its output and matplotlib figures into docs/gallery/.
# An example too slow for the docs build's minute is shown (code and text) without being run:
# deep_kernel_learning.py takes about 50 s of CPU even with --small (tests/tools/test_examples.py runs it).
GALLERY_NOT_EXECUTED = ["deep_kernel_learning.py"]
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "gallery",
    "filename_pattern": r"/(?!(" + "|".join(map(re.escape, GALLERY_NOT_EXECUTED)) + r")$)[^/]+\.py$",
    "ignore_pattern": r"__init__\.py",
    "reset_argv": "_gallery_hooks.reset_argv",
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "abort_on_example_error": True,
    "download_all_examples": False,
    "show_memory": False,
    "min_reported_time": 1,
}
