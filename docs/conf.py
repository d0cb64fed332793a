"""Sphinx configuration of torchgp's documentation: the API reference (autodoc + napoleon) and the Markdown guides (MyST)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

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
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

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

