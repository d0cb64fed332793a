#!/usr/bin/env bash
# Build the documentation (API reference, guides and the example gallery, which runs examples/*.py)
# into docs/_build/html, warnings as errors.
# Usage: scripts/build_docs.sh            (installs the `docs` extra into .venv first)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if ! "$PY" -c "import sphinx, myst_parser, sphinx_gallery, matplotlib" 2>/dev/null; then
    # the `docs` extra of pyproject.toml, without reinstalling torchgp itself
    "$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"]))' \
        | xargs "$PY" -m pip install --quiet
fi
exec "$PY" -m sphinx -b html -E -W --keep-going -q docs docs/_build/html "$@"
