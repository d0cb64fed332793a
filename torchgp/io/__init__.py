r"""Saving and loading models without pickle: ``torchgp.save(model, path)`` / ``torchgp.load(path)``.

The file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file: every tensor
(parameters and buffers from ``state_dict``, the training data, extra arrays) plus a JSON header
in the string metadata, and a SHA-256 digest checked on load, so that a file changed after saving
is refused (:mod:`torchgp.io.format`). The header says how to rebuild models made of torchgp's own
parts (:mod:`torchgp.io.specs`): :class:`~torchgp.models.builders.ExactGPModel`, the variational
:class:`~torchgp.models.builders.ApproximateGPModel`, sklearn and CLI models, with their
constraints and registered priors; other model classes load into an instance you build:
``load(path, model=MyModel(...))``. Fitted :mod:`torchgp.sklearn` estimators are saved the same
way (:mod:`torchgp.io.saving`). Nothing in the file is ever executed.
"""

from __future__ import annotations

import importlib

from torchgp.io.format import FORMAT, FORMAT_VERSION, ModelFileError
from torchgp.io.saving import load, save
from torchgp.io.specs import build_model, model_spec
from torchgp.models.builders import (
    ApproximateGPModel,
    ExactGPModel,
    HadamardGPModel,
    IndependentMultitaskGPModel,
    MultitaskExactGPModel,
)

__all__ = ["save", "load", "ModelFileError", "ExactGPModel", "ApproximateGPModel", "model_spec", "build_model"]
__all__ += ["FORMAT", "FORMAT_VERSION"]
__all__ += ["MultitaskExactGPModel", "IndependentMultitaskGPModel", "HadamardGPModel"]

_APPROX_CLASS = None


def _approximate_gp_model_class():
    """:class:`~torchgp.models.builders.ApproximateGPModel`, once :mod:`torchgp.variational` (which it needs) imports.

    Raises:
        ImportError: torchgp's variational code cannot be imported.
    """
    global _APPROX_CLASS
    if _APPROX_CLASS is None:
        importlib.import_module("torchgp.variational")
        _APPROX_CLASS = ApproximateGPModel
    return _APPROX_CLASS
