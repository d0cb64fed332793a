import pytest
import torch

import torchgp
from torchgp.check import check_gradients, check_kernel
from torchgp.errors import InputError
from torchgp.io import ExactGPModel
from torchgp.kernels import AdditiveKernel, PeriodicKernel, ProductKernel, RBFKernel, ScaleKernel
from torchgp.kernels.parse import parse_kernel


def test_parse_structure_and_ard():
    k = parse_kernel("rbf + periodic * rbf", ard_num_dims=3)
    assert isinstance(k, AdditiveKernel) and all(isinstance(t, ScaleKernel) for t in k.kernels)
    prod = k.kernels[1].base_kernel
    assert isinstance(prod, ProductKernel) and isinstance(prod.kernels[0], PeriodicKernel)
    assert k.kernels[0].base_kernel.lengthscale.shape == (1, 3)
    assert parse_kernel("RBF", ard_num_dims=3, ard=False).base_kernel.lengthscale.shape == (1, 1)
    nested = parse_kernel("(rbf + linear) * periodic", ard_num_dims=1)
    assert isinstance(nested, ScaleKernel) and isinstance(nested.base_kernel, ProductKernel)
    assert parse_kernel("matern12").base_kernel.nu == 0.5
    assert parse_kernel("poly3").base_kernel.power == 3
    assert parse_kernel("sm4", ard_num_dims=2).base_kernel.num_mixtures == 4
    for name in ("rq", "cosine", "linear", "matern32", "matern52"):
        assert check_kernel(parse_kernel(name, ard_num_dims=2)).ok, name
    kernel = RBFKernel()
    assert parse_kernel(kernel) is kernel


@pytest.mark.parametrize(
    "bad, match",
    [
        ("rbf +", "ends"),
        ("rbf ++ rq", "unexpected"),
        ("gauss", "Unknown kernel"),
        ("(rbf", "not closed"),
        ("rbf ) rq", "unexpected"),
        ("", "empty"),
        ("rbf - rq", "position"),
    ],
)
def test_parse_errors_explain(bad, match):
    with pytest.raises(InputError, match=match):
        parse_kernel(bad)


class NotPSD(torchgp.kernels.Kernel):
    """Symmetric, right diagonal, but 1 - |x - x'| is not positive semi-definite."""

    def forward(self, x1, x2, diag=False, **params):
        if diag:
            return torch.ones(x1.shape[:-1], dtype=x1.dtype)
        return 1 - torch.cdist(x1, x2)


class WrongDiag(torchgp.kernels.Kernel):
    has_lengthscale = True

    def forward(self, x1, x2, diag=False, **params):
        if diag:
            return torch.full(x1.shape[:-1], 2.0, dtype=x1.dtype)  # should be 1
        return torch.exp(-(torch.cdist(x1 / self.lengthscale, x2 / self.lengthscale) ** 2))


class DetachedGradient(torchgp.kernels.Kernel):
    has_lengthscale = True

    def forward(self, x1, x2, diag=False, **params):
        ls = self.lengthscale
        ls = ls + (ls.detach() ** 2 - ls.detach())  # value right, gradient wrong
        d2 = (x1.unsqueeze(-2) - x2.unsqueeze(-3)).div(ls.unsqueeze(-2)).pow(2).sum(-1)
        return torch.exp(-0.5 * d2).diagonal(dim1=-2, dim2=-1) if diag else torch.exp(-0.5 * d2)


class Unbatched(torchgp.kernels.Kernel):
    def forward(self, x1, x2, diag=False, **params):
        if diag:
            return torch.ones(x1.shape[:-1], dtype=x1.dtype)
        flat1, flat2 = x1.reshape(-1, x1.shape[-1]), x2.reshape(-1, x2.shape[-1])
        full = torch.exp(-(torch.cdist(flat1, flat2) ** 2))
        return full[: x1.shape[-2], : x2.shape[-2]].expand(*x1.shape[:-2], x1.shape[-2], x2.shape[-2])


def test_check_kernel_finds_each_problem():
    good = check_kernel(parse_kernel("rbf + periodic * rbf", ard_num_dims=2))
    assert good.ok and "all checks passed" in str(good)
    not_psd = check_kernel(NotPSD())
    assert not not_psd.ok and not not_psd["psd"].ok and not_psd["psd"].value < 0
    assert not_psd["symmetric"].ok and not_psd["diag"].ok and "FAIL" in str(not_psd)
    wrong_diag = check_kernel(WrongDiag())
    assert [i.name for i in wrong_diag.failed] == ["diag"]
    wrong_grad = check_kernel(DetachedGradient())
    assert [i.name for i in wrong_grad.failed] == ["gradient raw_lengthscale"]
    assert [i.name for i in check_kernel(Unbatched()).failed] == ["batch"]


def test_check_kernel_leaves_the_kernel_alone_and_takes_inputs():
    k = parse_kernel("rbf", ard_num_dims=2)
    before = {n: p.clone() for n, p in k.named_parameters()}
    report = check_kernel(k, X=torch.rand(7, 2))
    assert report.ok and all(torch.equal(before[n], p) for n, p in k.named_parameters())
    assert next(k.parameters()).dtype == torch.float32


def test_check_gradients_of_a_model():
    X = torch.rand(15, 2, dtype=torch.float64)
    model = ExactGPModel(X, X.sum(-1).sin(), kernel="rbf + linear").double()
    report = check_gradients(torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model))
    assert report.ok and len(report.items) == len(list(model.parameters()))
