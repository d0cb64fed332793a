"""Bayesian optimisation on torchgp's exact GPs: acquisition functions and their optimiser.

Analytic (one point, ``X (*batch, 1, d)`` → ``(*batch)``): :class:`ExpectedImprovement`,
:class:`LogExpectedImprovement`, :class:`ProbabilityOfImprovement`, :class:`LogProbabilityOfImprovement`,
:class:`UpperConfidenceBound`, :class:`PosteriorMean`.

Monte Carlo (q jointly chosen points, ``X (*batch, q, d)`` → ``(*batch)``): :class:`qExpectedImprovement`,
:class:`qLogExpectedImprovement`, :class:`qUpperConfidenceBound`.

:func:`optimize_acqf` maximises any of them over a box (through a closed-form
:class:`PosteriorSnapshot` of the model's posterior, see :func:`frozen_posterior`); :func:`minimize`
runs a whole BO loop.

Example:
    >>> from torchgp import bo  # doctest: +SKIP
    >>> model.eval()  # doctest: +SKIP
    >>> acqf = bo.LogExpectedImprovement(model, best_f=train_y.max())  # doctest: +SKIP
    >>> x_next, value = bo.optimize_acqf(acqf, bounds=torch.tensor([[0.0, 0.0], [1.0, 1.0]]))  # doctest: +SKIP
"""

from torchgp.bo.acquisition import (
    AcquisitionFunction,
    AnalyticAcquisitionFunction,
    ExpectedImprovement,
    LogExpectedImprovement,
    LogProbabilityOfImprovement,
    PosteriorMean,
    ProbabilityOfImprovement,
    UpperConfidenceBound,
)
from torchgp.bo.loop import BOModel, BOResult, fit_gp_mll, fit_scipy_lbfgsb, fit_surrogate, minimize
from torchgp.bo.monte_carlo import (
    MCAcquisitionFunction,
    qExpectedImprovement,
    qLogExpectedImprovement,
    qUpperConfidenceBound,
)
from torchgp.bo.numerics import log_h, ndtr
from torchgp.bo.optimize import optimize_acqf
from torchgp.bo.snapshot import PosteriorSnapshot, frozen_posterior

__all__ = [
    "AcquisitionFunction",
    "AnalyticAcquisitionFunction",
    "BOModel",
    "BOResult",
    "ExpectedImprovement",
    "LogExpectedImprovement",
    "LogProbabilityOfImprovement",
    "MCAcquisitionFunction",
    "PosteriorMean",
    "PosteriorSnapshot",
    "ProbabilityOfImprovement",
    "UpperConfidenceBound",
    "fit_gp_mll",
    "fit_scipy_lbfgsb",
    "fit_surrogate",
    "frozen_posterior",
    "log_h",
    "minimize",
    "ndtr",
    "optimize_acqf",
    "qExpectedImprovement",
    "qLogExpectedImprovement",
    "qUpperConfidenceBound",
]
