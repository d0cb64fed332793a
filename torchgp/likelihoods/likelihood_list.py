"""A list of likelihoods, one per output of an :class:`~torchgp.models.IndependentModelList`."""

from __future__ import annotations

from torch.nn import ModuleList

from torchgp.errors import InputError
from torchgp.likelihoods.likelihood import Likelihood


def _per_likelihood_args(num: int, args: tuple) -> list[tuple]:
    """One argument tuple per likelihood: a tuple argument is spread, anything else is passed alone."""
    if len(args) != num:
        raise InputError(
            f"LikelihoodList holds {num} likelihoods but got {len(args)} argument(s); pass one output (or one tuple "
            "of arguments) per likelihood, e.g. likelihood(*model(x1, x2))."
        )
    return [arg if isinstance(arg, tuple) else (arg,) for arg in args]


class LikelihoodList(Likelihood):
    """Independent likelihoods applied output by output (GPyTorch's ``LikelihoodList``).

    Args:
        *likelihoods: one likelihood per output.

    Shapes:
        ``likelihood(out_1, ..., out_k)`` → list of ``k`` results, ``likelihood_i(out_i)``; an argument that
        is a tuple is spread: ``likelihood((f_1, X_1), ...)`` calls ``likelihood_1(f_1, X_1)``.
        ``noise=[n_1, ..., n_k]`` passes ``noise=n_i`` to the ``i``-th likelihood.
    """

    def __init__(self, *likelihoods):
        super().__init__()
        self.likelihoods = ModuleList(likelihoods)

    def _map(self, method: str, args: tuple, kwargs: dict) -> list:
        per_args = _per_likelihood_args(len(self.likelihoods), args)
        per_kwargs = [dict(kwargs) for _ in self.likelihoods]
        if "noise" in kwargs:  # an iterable of noises, one per likelihood
            noise = list(kwargs["noise"])
            if len(noise) != len(self.likelihoods):
                raise InputError(
                    f"noise must hold one tensor per likelihood ({len(self.likelihoods)}); got {len(noise)}."
                )
            for kw, noise_i in zip(per_kwargs, noise):
                kw["noise"] = noise_i
        return [
            getattr(lik, method)(*a, **kw) for lik, a, kw in zip(self.likelihoods, per_args, per_kwargs, strict=True)
        ]

    def __call__(self, *args, **kwargs) -> list:
        return self._map("__call__", args, kwargs)

    def forward(self, *args, **kwargs) -> list:
        return self._map("forward", args, kwargs)

    def expected_log_prob(self, *args, **kwargs) -> list:
        """``[lik_i.expected_log_prob(*args_i)]``: each argument a tuple ``(y_i, q(f_i))``."""
        return self._map("expected_log_prob", args, kwargs)

    def log_marginal(self, *args, **kwargs) -> list:
        """``[lik_i.log_marginal(*args_i)]``: each argument a tuple ``(y_i, q(f_i))``."""
        return self._map("log_marginal", args, kwargs)

    def marginal(self, *args, **kwargs) -> list:
        return self._map("marginal", args, kwargs)
