"""Errors and warnings raised by torchgp.

Every error says what was expected, what came, and how to fix it. Bad input raises a
``ValueError``/``TypeError`` subclass; numerical trouble raises :class:`NotPSDError` or
warns with :class:`NumericalWarning` after a sound recovery.
"""

from __future__ import annotations


class TorchGPError(Exception):
    """Base class of every torchgp error."""


class ShapeError(TorchGPError, ValueError):
    """A tensor has the wrong number of dimensions or mismatching sizes."""


class InputError(TorchGPError, ValueError):
    """An argument has an invalid value (NaN, out of its constraint, empty, ...)."""


class ModelTypeError(TorchGPError, TypeError):
    """An object of the wrong kind was passed (e.g. a non-Gaussian likelihood to an ExactGP)."""


class NotPSDError(TorchGPError, RuntimeError):
    """A matrix that should be positive definite is not, even after adding jitter."""


class NonFiniteError(TorchGPError, FloatingPointError):
    """A loss or a parameter became NaN or infinite."""


class KernelMemoryError(TorchGPError, MemoryError):
    """A dense kernel matrix would not fit in the memory budget (``settings.max_dense_memory``)."""


class ConvergenceError(TorchGPError, RuntimeError):
    """An iterative solver did not reach its tolerance and ``settings.cg_nonconvergence`` is 'raise'."""


class NumericalWarning(RuntimeWarning):
    """A numerical problem was recovered from (e.g. jitter added); the message says what was done."""


class ConvergenceWarning(NumericalWarning):
    """An iterative solver stopped before reaching its tolerance; the message gives the residual."""
