"""torchgp: Gaussian processes on PyTorch, trained by automatic differentiation.

The public namespaces mirror GPyTorch's, so ``import torchgp as gpytorch`` runs typical GPyTorch code.
"""

from torchgp import (
    _module_paths,
    beta_features,
    bo,
    constraints,
    distributed,
    distributions,
    errors,
    functions,
    kernels,
    lazy,
    likelihoods,
    linalg,
    means,
    metrics,
    mlls,
    models,
    optim,
    priors,
    settings,
    utils,
    variational,
)
from torchgp.check import check_gradients, check_kernel
from torchgp.functions import (
    add_diagonal,
    add_jitter,
    dsmm,
    inv_matmul,
    inv_quad,
    inv_quad_logdet,
    log_normal_cdf,
    logdet,
    matmul,
    pivoted_cholesky,
    root_decomposition,
    root_inv_decomposition,
    solve,
    sqrt_inv_matmul,
)
from torchgp.io import load, save
from torchgp.mlls import ExactMarginalLogLikelihood
from torchgp.module import Module
from torchgp.optim.fit import fit

__version__ = "0.1.0"

_module_paths.install()  # GPyTorch's module paths (torchgp.kernels.rbf_kernel, ...) resolve from here on

__all__ = [
    "Module",
    "ExactMarginalLogLikelihood",
    "__version__",
    "beta_features",
    "metrics",
    "utils",
    "fit",
    "save",
    "load",
    "check_kernel",
    "check_gradients",
    "bo",
    "constraints",
    "distributed",
    "distributions",
    "errors",
    "kernels",
    "likelihoods",
    "linalg",
    "means",
    "mlls",
    "models",
    "optim",
    "variational",
    "priors",
    "settings",
    "functions",
    "lazy",
    "add_diagonal",
    "add_jitter",
    "dsmm",
    "inv_matmul",
    "inv_quad",
    "inv_quad_logdet",
    "log_normal_cdf",
    "logdet",
    "matmul",
    "pivoted_cholesky",
    "root_decomposition",
    "root_inv_decomposition",
    "solve",
    "sqrt_inv_matmul",
]
