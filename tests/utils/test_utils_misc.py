"""torchgp.utils: cholesky signature, transforms, caching, deprecation helpers, interaction sums, NNUtil."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp import utils
from torchgp.utils.memoize import add_to_cache, clear_cache_hook, get_from_cache, pop_from_cache

gpytorch = pytest.importorskip("gpytorch")


def test_warning_and_error_classes_are_torchgps_own():
    assert utils.warnings.NumericalWarning is torchgp.errors.NumericalWarning
    assert utils.errors.NotPSDError is torchgp.errors.NotPSDError
    assert issubclass(utils.warnings.GPInputWarning, UserWarning)
    assert issubclass(utils.errors.CachingError, RuntimeError)
    assert issubclass(utils.errors.NanError, RuntimeError)


def test_psd_safe_cholesky_gpytorch_signature():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(2, 5, 5, generator=g, dtype=torch.float64)
    A = A @ A.mT + torch.eye(5, dtype=torch.float64)
    L = utils.cholesky.psd_safe_cholesky(A)
    assert_close(L @ L.mT, A)
    U = utils.cholesky.psd_safe_cholesky(A, upper=True)
    assert_close(U.mT @ U, A)
    assert torch.equal(U, torch.triu(U))
    out = torch.empty_like(A)
    assert utils.cholesky.psd_safe_cholesky(A, False, out) is out
    assert_close(out, L)
    singular = torch.ones(3, 3, dtype=torch.float64)
    with pytest.warns(torchgp.errors.NumericalWarning):
        Ls = utils.cholesky.psd_safe_cholesky(singular, jitter=1e-6, max_tries=3)
    assert torch.isfinite(Ls).all()
    with pytest.raises(torchgp.errors.NotPSDError):
        utils.cholesky.psd_safe_cholesky(-torch.eye(3, dtype=torch.float64), max_tries=2)


def test_transforms_invert_and_match_gpytorch():
    x = torch.tensor([1e-6, 0.3, 2.0, 40.0], dtype=torch.float64)
    assert_close(torch.nn.functional.softplus(utils.transforms.inv_softplus(x)), x)
    assert_close(utils.transforms.inv_softplus(x), gpytorch.utils.transforms.inv_softplus(x))
    p = torch.tensor([1e-4, 0.25, 0.5, 0.9], dtype=torch.float64)
    assert_close(torch.sigmoid(utils.transforms.inv_sigmoid(p)), p)
    assert_close(utils.transforms.inv_sigmoid(p), gpytorch.utils.transforms.inv_sigmoid(p))
    get = utils.transforms._get_inv_param_transform
    assert get(torch.exp) is torch.log
    assert get(torch.nn.functional.softplus) is utils.transforms.inv_softplus
    custom = lambda t: t**2  # noqa: E731
    assert get(custom, torch.sqrt) is torch.sqrt
    with pytest.raises(RuntimeError, match="inv_param_transform"):
        get(custom)
    with pytest.raises(RuntimeError):
        get(torch.exp, torch.sqrt)


def test_cached_decorator_with_and_without_args():
    calls = []

    class A:
        @utils.cached(name="sq")
        def f(self, x, scale=1):
            calls.append(x)
            return x * x * scale

        @utils.cached(ignore_args=True)
        def once(self, x):
            calls.append(("once", x))
            return x

    a = A()
    assert a.f(3) == 9 and a.f(3) == 9 and a.f(3, scale=2) == 18
    assert calls == [3, 3]
    assert get_from_cache(a, "sq", 3) == 9
    assert a.once(1) == 1 and a.once(2) == 1
    add_to_cache(a, "sq", 100, 4)
    assert a.f(4) == 100
    assert pop_from_cache(a, "sq", 4) == 100
    with pytest.raises(utils.errors.CachingError):
        get_from_cache(a, "sq", 4)
    clear_cache_hook(a)
    assert a.f(3) == 9 and calls[-1] == 3


def test_deprecation_helpers_warn_and_forward():
    from torchgp.utils import deprecation as dep

    old = dep._deprecated_function_for("old_sum", sum)
    with pytest.warns(DeprecationWarning, match="old_sum"):
        assert old([1, 2]) == 3
    with pytest.warns(DeprecationWarning):
        assert dep._deprecate_kwarg({"lengthscale_prior": 5}, "lengthscale_prior", "prior", None) == 5
    with pytest.raises(ValueError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dep._deprecate_kwarg({"a": 1}, "a", "b", 2)
    with pytest.warns(DeprecationWarning):
        assert dep._deprecate_kwarg_with_transform({"a": 2}, "a", "b", None, lambda v: v * 10) == 20

    class C:
        def new(self, x):
            return x + 1

    dep._deprecate_renamed_methods(C, old="new")
    with pytest.warns(DeprecationWarning, match="old"):
        assert C().old(1) == 2
    assert dep.bool_compat == torch.bool


@pytest.mark.parametrize("max_degree", [None, 1, 2, 3])
def test_sum_interaction_terms_equals_explicit_subsets(max_degree):
    g = torch.Generator().manual_seed(0)
    K = torch.rand(2, 4, 3, 3, generator=g, dtype=torch.float64)  # batch 2, D = 4
    got = utils.sum_interaction_terms(K, max_degree=max_degree)
    M = 4 if max_degree is None else max_degree
    expected = torch.zeros(2, 3, 3, dtype=torch.float64)
    for m in range(1, M + 1):
        for subset in itertools.combinations(range(4), m):
            expected = expected + torch.stack([K[:, i] for i in subset]).prod(0)
    assert_close(got, expected)
    if max_degree is not None:
        assert_close(got, gpytorch.utils.sum_interaction_terms(K, max_degree=max_degree))
    other_dim = utils.sum_interaction_terms(K.unsqueeze(-3), max_degree, dim=-4)  # D along dim -4
    assert_close(other_dim, got.unsqueeze(-3))
    with pytest.raises(torchgp.errors.InputError, match="negative"):
        utils.sum_interaction_terms(K, dim=1)


def test_nnutil_matches_brute_force_and_gpytorch():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2, 30, 3, generator=g)
    T = torch.randn(2, 7, 3, generator=g)
    nn = utils.NNUtil(k=4, dim=3, batch_shape=torch.Size([2]))
    nn.set_nn_idx(X)
    idx = nn.find_nn_idx(T)
    assert idx.shape == (2, 7, 4) and idx.dtype == torch.long
    brute = torch.cdist(T.double(), X.double()).argsort(-1)[..., :4]
    assert torch.equal(idx, brute)
    assert torch.equal(nn.find_nn_idx(T, k=2), brute[..., :2])
    seq = nn.build_sequential_nn_idx(X)
    assert seq.shape == (2, 26, 4)
    for b in range(2):
        for i in range(4, 30):
            d = torch.cdist(X[b, i : i + 1].double(), X[b, :i].double())[0]
            assert torch.equal(seq[b, i - 4], d.argsort()[:4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = gpytorch.utils.NNUtil(k=4, dim=3, batch_shape=torch.Size([2]), preferred_nnlib="sklearn")
    theirs.set_nn_idx(X)
    assert torch.equal(idx, theirs.find_nn_idx(T))
    assert torch.equal(seq, theirs.build_sequential_nn_idx(X))


def test_nnutil_errors_name_the_problem():
    with pytest.raises(torchgp.errors.InputError, match="k must be"):
        utils.NNUtil(k=0, dim=2)
    nn = utils.NNUtil(k=2, dim=2)
    with pytest.raises(torchgp.errors.InputError, match="set_nn_idx"):
        nn.find_nn_idx(torch.zeros(3, 2))
    with pytest.raises(torchgp.errors.ShapeError, match=r"\(n, 2\)"):
        nn.set_nn_idx(torch.zeros(5, 3))
    nn.set_nn_idx(torch.zeros(3, 2))
    with pytest.raises(torchgp.errors.InputError, match="k must be in"):
        nn.find_nn_idx(torch.zeros(1, 2), k=4)


def test_blockwise_search_equals_one_block(monkeypatch):
    import torchgp.utils.nearest_neighbors as nnmod

    g = torch.Generator().manual_seed(3)
    X = torch.randn(50, 2, generator=g, dtype=torch.float64)
    nn = utils.NNUtil(k=3, dim=2)
    nn.set_nn_idx(X)
    whole_find, whole_seq = nn.find_nn_idx(X[:20]), nn.build_sequential_nn_idx(X)
    monkeypatch.setattr(nnmod, "_BLOCK_ENTRIES", 60)  # blocks of one or two rows
    assert torch.equal(nn.find_nn_idx(X[:20]), whole_find)
    assert torch.equal(nn.build_sequential_nn_idx(X), whole_seq)


def test_quadrature_is_the_likelihoods_one():
    assert utils.quadrature.GaussHermiteQuadrature1D is torchgp.likelihoods.quadrature.GaussHermiteQuadrature1D
