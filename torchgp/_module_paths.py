"""GPyTorch's module paths inside torchgp's namespaces: ``from torchgp.kernels.rbf_kernel import RBFKernel``.

GPyTorch keeps one class per file and its documentation imports from those files
(``gpytorch.mlls.sum_marginal_log_likelihood``, ``gpytorch.variational.variational_strategy``, ...).
torchgp groups related classes in fewer files, so :data:`MODULE_PATHS` maps each such path to the
namespace that holds its names, and :class:`_AliasFinder` (appended to ``sys.meta_path`` once, when
``torchgp`` is imported) imports the path as a real module whose attributes are that namespace's.
Being last on ``sys.meta_path``, it is asked only for names no real file provides: real files win.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

__all__ = ["MODULE_PATHS", "install"]

# namespace -> GPyTorch submodule names whose public names live in that namespace here
_TABLE = {
    "torchgp.distributions": ("delta", "distribution", "multitask_multivariate_normal", "multivariate_normal"),
    "torchgp.functions": ("_log_normal_cdf", "matern_covariance", "rbf_covariance"),
    "torchgp.kernels": (
        "additive_structure_kernel",
        "arc_kernel",
        "constant_kernel",
        "cosine_kernel",
        "cylindrical_kernel",
        "distributional_input_kernel",
        "gaussian_symmetrized_kl_kernel",
        "grid_interpolation_kernel",
        "grid_kernel",
        "hamming_kernel",
        "index_kernel",
        "inducing_point_kernel",
        "kernel",
        "lcm_kernel",
        "linear_kernel",
        "matern52_kernel_grad",
        "matern_kernel",
        "multi_device_kernel",
        "multitask_kernel",
        "newton_girard_additive_kernel",
        "periodic_kernel",
        "piecewise_polynomial_kernel",
        "polynomial_kernel",
        "polynomial_kernel_grad",
        "product_structure_kernel",
        "rbf_kernel",
        "rbf_kernel_grad",
        "rbf_kernel_gradgrad",
        "rff_kernel",
        "rq_kernel",
        "scale_kernel",
        "spectral_delta_kernel",
        "spectral_mixture_kernel",
    ),
    "torchgp.kernels.keops": ("matern_kernel", "periodic_kernel", "rbf_kernel"),
    "torchgp.lazy": ("lazy_evaluated_kernel_tensor",),
    "torchgp.likelihoods": (
        "bernoulli_likelihood",
        "beta_likelihood",
        "gaussian_likelihood",
        "hadamard_gaussian_likelihood",
        "laplace_likelihood",
        "likelihood",
        "likelihood_list",
        "multitask_gaussian_likelihood",
        "negative_binomial_likelihood",
        "noise_models",
        "poisson_likelihood",
        "softmax_likelihood",
        "student_t_likelihood",
    ),
    "torchgp.means": (
        "constant_mean",
        "constant_mean_grad",
        "constant_mean_gradgrad",
        "linear_mean",
        "linear_mean_grad",
        "linear_mean_gradgrad",
        "mean",
        "multitask_mean",
        "zero_mean",
    ),
    "torchgp.metrics": ("metrics",),
    "torchgp.mlls": (
        "_approximate_mll",
        "added_loss_term",
        "deep_approximate_mll",
        "deep_predictive_log_likelihood",
        "exact_marginal_log_likelihood",
        "gamma_robust_variational_elbo",
        "inducing_point_kernel_added_loss_term",
        "kl_gaussian_added_loss_term",
        "leave_one_out_pseudo_likelihood",
        "marginal_log_likelihood",
        "noise_model_added_loss_term",
        "predictive_log_likelihood",
        "sum_marginal_log_likelihood",
        "variational_elbo",
    ),
    "torchgp.models": ("approximate_gp", "exact_gp", "exact_prediction_strategies", "gp", "model_list"),
    "torchgp.optim": ("ngd",),
    "torchgp.priors": ("horseshoe_prior", "lkj_prior", "prior", "smoothed_box_prior", "torch_priors", "wishart_prior"),
    "torchgp.variational": (
        "_variational_distribution",
        "_variational_strategy",
        "additive_grid_interpolation_variational_strategy",
        "batch_decoupled_variational_strategy",
        "cholesky_variational_distribution",
        "ciq_variational_strategy",
        "delta_variational_distribution",
        "grid_interpolation_variational_strategy",
        "independent_multitask_variational_strategy",
        "large_batch_variational_strategy",
        "lmc_variational_strategy",
        "mean_field_variational_distribution",
        "natural_variational_distribution",
        "nearest_neighbor_variational_strategy",
        "orthogonally_decoupled_variational_strategy",
        "tril_natural_variational_distribution",
        "unwhitened_variational_strategy",
        "variational_strategy",
    ),
}

#: full module path (``torchgp.kernels.rbf_kernel``) -> the namespace holding its names (``torchgp.kernels``)
MODULE_PATHS: dict[str, str] = {f"{ns}.{sub}": ns for ns, subs in _TABLE.items() for sub in subs}


class _AliasLoader(importlib.abc.Loader):
    """Makes a module whose attribute lookups go to the namespace ``target``."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return types.ModuleType(spec.name)

    def exec_module(self, module) -> None:
        namespace = importlib.import_module(self.target)
        module.__doc__ = f"GPyTorch's module path {module.__name__}; its names live in :mod:`{self.target}`."
        module.__all__ = list(getattr(namespace, "__all__", ()))

        def __getattr__(name, _ns=namespace):
            try:
                return getattr(_ns, name)
            except AttributeError:
                raise AttributeError(
                    f"module {module.__name__!r} (an alias of {_ns.__name__!r}) has no attribute {name!r}"
                ) from None

        module.__getattr__ = __getattr__
        module.__dir__ = lambda _ns=namespace: sorted(set(dir(_ns)))


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds the module paths of :data:`MODULE_PATHS` that no real file provides."""

    def find_spec(self, fullname, path, target=None):
        namespace = MODULE_PATHS.get(fullname)
        if namespace is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(namespace))


def install() -> None:
    """Append the finder to ``sys.meta_path`` (once).

    A namespace that is a single file (not a package) gets an empty ``__path__``, which is what makes
    Python's import system look up submodule paths below it at all.
    """
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
    for namespace in _TABLE:
        module = sys.modules.get(namespace)
        if module is not None and not hasattr(module, "__path__"):
            module.__path__ = []
    # as in GPyTorch, whose namespaces import their files, ``torchgp.kernels.rbf_kernel`` is then an
    # attribute without an import statement of its own
    for path, namespace in MODULE_PATHS.items():
        if namespace in sys.modules and path not in sys.modules:
            importlib.import_module(path)
