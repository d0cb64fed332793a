"""The fused stationary-kernel node equals plain autograd through the same kernel, to 1e-10 in float64."""

from __future__ import annotations

import math

import pytest
import torch

import torchgp
from torchgp import kernels, settings
from torchgp.kernels._fused import StationaryCovariance, pairwise_sq_dist


class Cauchy(kernels.StationaryKernel):
    """A user's stationary kernel: only its profile and derivative."""

    dK_dr2_uses_r2 = False

    def K_r2(self, r2):
        return 1 / (1 + r2)

    def dK_dr2(self, r2, K):
        return -K * K


class CauchyNoGrad(kernels.StationaryKernel):
    """Profile only: falls back to plain autograd."""

    def K_r2(self, r2):
        return 1 / (1 + r2)


def _stationary_classes():
    """Every built-in StationaryKernel subclass on the fused path (a new one is tested without being listed).

    Subclasses that write their own ``forward`` (derivative kernels) do not use the profile and are left out.
    """
    found, todo = [], [kernels.StationaryKernel]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("torchgp.") and sub.forward is kernels.StationaryKernel.forward:
                found.append(sub)
    return found


BUILDERS = {
    "rbf": lambda **kw: kernels.RBFKernel(**kw),
    "matern12": lambda **kw: kernels.MaternKernel(nu=0.5, **kw),
    "matern32": lambda **kw: kernels.MaternKernel(nu=1.5, **kw),
    "matern52": lambda **kw: kernels.MaternKernel(nu=2.5, **kw),
    "rq": lambda **kw: kernels.RQKernel(**kw),
    "periodic": lambda **kw: kernels.PeriodicKernel(**kw),
    "cauchy": lambda **kw: Cauchy(**kw),
    "keops_rbf": lambda **kw: kernels.keops.RBFKernel(**kw),
    "keops_matern32": lambda **kw: kernels.keops.MaternKernel(nu=1.5, **kw),
    "keops_periodic": lambda **kw: kernels.keops.PeriodicKernel(**kw),
}


def test_every_builtin_stationary_kernel_is_covered():
    built = {type(b()) for b in BUILDERS.values()}
    assert set(_stationary_classes()) <= built


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) - 0.5)
    return module


def _loss_and_grads(kernel, x1, x2, G, fused):
    """``Σ G ∘ K`` and its gradients to every parameter and to the inputs."""
    with settings.fused_kernels(fused):
        K = kernel(x1, x2).to_dense() if x2 is not None else kernel(x1).to_dense()
        loss = (K * G).sum()
    inputs = [x1] + ([x2] if x2 is not None and x2.requires_grad else [])
    params = list(kernel.parameters())
    grads = torch.autograd.grad(loss, params + inputs, allow_unused=True)
    return K.detach(), [torch.zeros_like(t) if g is None else g for g, t in zip(grads, params + inputs)]


def _compare(kernel, x1, x2=None, seed=1):
    shape = kernel(x1, x2).shape
    G = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if x2 is None:
        G = G + G.mT  # the MLL's ∂L/∂K is symmetric; the node must not assume it
        G[..., 0, 1] += 0.3
    K0, g0 = _loss_and_grads(kernel, x1, x2, G, fused=False)
    K1, g1 = _loss_and_grads(kernel, x1, x2, G, fused=True)
    torch.testing.assert_close(K1, K0, rtol=1e-10, atol=1e-12)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("ard", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_fused_equals_autograd(name, ard, cross):
    d = 3
    kernel = _randomise(BUILDERS[name](ard_num_dims=d if ard else None).double())
    g = torch.Generator().manual_seed(2)
    x1 = torch.randn(9, d, generator=g, dtype=torch.float64).requires_grad_()  # deep-kernel inputs
    x2 = torch.randn(5, d, generator=g, dtype=torch.float64).requires_grad_() if cross else None
    _compare(kernel, x1, x2)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_fused_equals_autograd_gram_form(name):
    """Sizes past the direct-difference limit: the one-GEMM r² and the closed-form backward."""
    kernel = _randomise(BUILDERS[name](ard_num_dims=9).double())
    g = torch.Generator().manual_seed(5)
    x1 = (torch.randn(64, 9, generator=g, dtype=torch.float64) + 10.0).requires_grad_()
    _compare(kernel, x1)
    _compare(kernel, x1, (torch.randn(70, 9, generator=g, dtype=torch.float64) + 10.0).requires_grad_())


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_fused_batched_and_active_dims(name):
    kernel = _randomise(BUILDERS[name](ard_num_dims=2, batch_shape=torch.Size([3]), active_dims=[0, 2]).double())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 7, 4, generator=g, dtype=torch.float64).requires_grad_()
    _compare(kernel, x)
    # inputs without the batch dimension broadcast against batched hyperparameters
    x_flat = torch.randn(7, 4, generator=g, dtype=torch.float64).requires_grad_()
    _compare(kernel, x_flat)
    _compare(kernel, x_flat, torch.randn(2, 1, 5, 4, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("name", ["rbf", "matern52", "rq", "periodic"])
def test_fused_composite_mll_gradients(name):
    """ScaleKernel(k1 * k2 + k3) inside the exact MLL: the same loss and gradients both ways."""
    torch.manual_seed(0)
    X = torch.rand(15, 2, dtype=torch.float64)
    y = torch.sin(4 * X.sum(-1))

    class GP(torchgp.models.ExactGP):
        def __init__(self, lik):
            super().__init__(X, y, lik)
            self.mean_module = torchgp.means.ConstantMean()
            k1 = BUILDERS[name](ard_num_dims=2)
            k2 = kernels.RBFKernel(active_dims=[1])
            k3 = kernels.MaternKernel(nu=1.5)
            self.covar_module = kernels.ScaleKernel(k1 * k2 + k3)

        def forward(self, x):
            return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    lik = torchgp.likelihoods.GaussianLikelihood()
    model = _randomise(GP(lik).double())
    mll = torchgp.mlls.ExactMarginalLogLikelihood(lik, model)
    results = []
    for fused in (False, True):
        with settings.fused_kernels(fused):
            loss = -mll(model(X), y)
        results.append((loss.detach(), torch.autograd.grad(loss, list(model.parameters()))))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-12, atol=1e-12)
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("batch", [(), (2,)])
def test_fused_outputscale_equals_scale_kernel(name, batch):
    """``forward(x1, x2, outputscale=s)`` (the fused ScaleKernel) equals ``s ·`` the plain kernel."""
    base = _randomise(BUILDERS[name](ard_num_dims=2, batch_shape=torch.Size(batch)).double())
    s = (torch.rand(batch, dtype=torch.float64) + 0.5).requires_grad_()
    g = torch.Generator().manual_seed(6)
    for x2 in (None, torch.randn(6, 2, generator=g, dtype=torch.float64)):
        x1 = torch.randn(8, 2, generator=g, dtype=torch.float64).requires_grad_()
        G = torch.randn(*batch, 8, 6 if x2 is not None else 8, generator=g, dtype=torch.float64)
        results = []
        for fused in (False, True):
            with settings.fused_kernels(fused):
                K = base.evaluate_block(x1, x1 if x2 is None else x2, outputscale=s)
            ref = base.evaluate_block(x1, x1 if x2 is None else x2) * s[..., None, None]
            torch.testing.assert_close(K, ref, rtol=1e-12, atol=1e-12)
            results.append(torch.autograd.grad((K * G).sum(), [s, x1, *base.parameters()]))
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        diag = base.evaluate_block(x1, x1, diag=True, outputscale=s)
        torch.testing.assert_close(diag, s[..., None].expand(*batch, 8), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_fused_gradcheck(name):
    kernel = _randomise(BUILDERS[name](ard_num_dims=2).double())
    theta = kernel.profile_params()
    g = torch.Generator().manual_seed(4)
    a = torch.randn(5, kernel.scaled(torch.zeros(1, 2, dtype=torch.float64)).shape[-1], generator=g)
    a = a.double().requires_grad_()
    b = torch.randn(4, a.shape[-1], generator=g, dtype=torch.float64).requires_grad_()
    leaves = [t.detach().requires_grad_() for t in theta]
    s = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, *t: StationaryCovariance.apply(kernel, a, b, None, *t), (a, b, *leaves)
    )
    assert torch.autograd.gradcheck(lambda a, *t: StationaryCovariance.apply(kernel, a, None, None, *t), (a, *leaves))
    assert torch.autograd.gradcheck(
        lambda a, b, s, *t: StationaryCovariance.apply(kernel, a, b, s, *t), (a, b, s, *leaves)
    )


def test_fused_float32_matches_float64():
    kernel = _randomise(kernels.MaternKernel(nu=2.5, ard_num_dims=2).double())
    x = torch.rand(20, 2, dtype=torch.float64) * 3 + 100.0  # a large offset: the centring keeps r² accurate
    K64 = kernel(x).to_dense()
    K32 = kernel.float()(x.float()).to_dense()
    torch.testing.assert_close(K32.double(), K64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cross", [False, True])
def test_gram_form_is_accurate_far_from_the_origin(cross):
    """Above the direct-difference size the node centres the inputs: a common offset of 1e5 loses no digits."""
    g = torch.Generator().manual_seed(5)
    x1 = torch.rand(300, 2, generator=g, dtype=torch.float64) * 3 + 1e5
    x2 = torch.rand(250, 2, generator=g, dtype=torch.float64) * 3 + 1e5 if cross else x1
    x1[7, 1] = math.nan  # a non-finite row spoils only its own entries
    kernel = kernels.RBFKernel(ard_num_dims=2).double()
    kernel.lengthscale = torch.tensor([[0.7, 1.3]], dtype=torch.float64)
    with torch.no_grad():
        K = kernel(x1, x2).to_dense()
        a, b = x1 / kernel.lengthscale, x2 / kernel.lengthscale
        ref = torch.exp(-0.5 * (a[:, None] - b[None]).square().sum(-1))
    finite = torch.isfinite(ref)
    rows = torch.arange(300) != 7
    assert not finite[7].any() and finite[rows][:, torch.arange(ref.shape[-1]) != 7].all()
    torch.testing.assert_close(K[finite], ref[finite], rtol=1e-9, atol=1e-11)


def test_pairwise_sq_dist_is_exact_at_zero_and_nonnegative():
    x = torch.randn(6, 3, dtype=torch.float64)
    x = torch.cat([x, x[:2]])  # duplicates off the diagonal
    r2 = pairwise_sq_dist(x - x.mean(0), x - x.mean(0), symmetric=True)
    ref = (x[:, None] - x[None]).square().sum(-1)
    torch.testing.assert_close(r2, ref, rtol=1e-12, atol=1e-12)
    assert (r2.diagonal() == 0).all() and (r2 >= 0).all()


def test_user_kernel_without_derivative_uses_autograd():
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    K = CauchyNoGrad().double()(x).to_dense()
    assert K.grad_fn is not None and "StationaryCovariance" not in type(K.grad_fn).__name__
    K2 = Cauchy().double()(x).to_dense()
    assert "StationaryCovariance" in type(K2.grad_fn).__name__
    torch.testing.assert_close(K, K2, rtol=1e-12, atol=1e-12)


def test_fused_matrix_keeps_no_n_by_n_intermediates():
    """RBF keeps only K itself for its backward; autograd would keep more n × n tensors."""
    x = torch.randn(50, 2, dtype=torch.float64)
    k = kernels.RBFKernel(ard_num_dims=2).double()
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        k(x).to_dense()
    assert sum(1 for s in saved if s >= 50 * 50) == 1


def test_diag_and_ones():
    for build in BUILDERS.values():
        k = _randomise(build(ard_num_dims=2).double())
        x = torch.randn(4, 2, dtype=torch.float64)
        full = k(x, x.clone()).to_dense()
        torch.testing.assert_close(k(x, x.clone(), diag=True), full.diagonal(), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(k(x, diag=True), torch.ones(4, dtype=torch.float64))
    assert math.isclose(Cauchy()(torch.zeros(1, 1)).to_dense().item(), 1.0)


@pytest.mark.parametrize("nu", [None, 0.5, 1.5, 2.5])
def test_gpytorch_function_names_match_gpytorch(nu):
    """``torchgp.functions.RBFCovariance`` / ``MaternCovariance`` against GPyTorch's (one lengthscale)."""
    gpytorch = pytest.importorskip("gpytorch")
    from torchgp.functions import MaternCovariance, RBFCovariance

    g = torch.Generator().manual_seed(7)
    x1 = torch.randn(7, 3, generator=g, dtype=torch.float64)
    x2 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    ell = torch.tensor([[0.8]], dtype=torch.float64, requires_grad=True)
    if nu is None:
        sq = lambda a, b: torch.cdist(a, b).square()  # noqa: E731
        ours, theirs = RBFCovariance.apply(x1, x2, ell, sq), gpytorch.functions.RBFCovariance.apply(x1, x2, ell, sq)
    else:
        ours = MaternCovariance.apply(x1, x2, ell, nu, torch.cdist)
        theirs = gpytorch.functions.MaternCovariance.apply(x1, x2, ell, nu, torch.cdist)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    G = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    g_ours, g_theirs = (torch.autograd.grad((K * G).sum(), ell)[0] for K in (ours, theirs))
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-10, atol=1e-12)
    # ARD lengthscales and input gradients, which GPyTorch's Functions do not take, by gradcheck
    ell_ard = torch.tensor([[0.8, 1.1, 0.6]], dtype=torch.float64, requires_grad=True)
    x1g = x1.clone().requires_grad_()
    fn = (
        (lambda a, e: RBFCovariance.apply(a, x2, e))
        if nu is None
        else (lambda a, e: MaternCovariance.apply(a, x2, e, nu))
    )
    assert torch.autograd.gradcheck(fn, (x1g, ell_ard))


def test_scale_kernel_fuses_outputscale_and_respects_overridden_forward():
    """ScaleKernel passes s into the fused node only when the base forward is the stationary one."""
    from torchgp import kernels as K

    class Doubled(K.RBFKernel):
        def forward(self, x1, x2, **params):
            return 2 * super().forward(x1, x2)

    X = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for base in (K.RBFKernel(), Doubled()):
        k = K.ScaleKernel(base).double()
        k.outputscale = 1.7
        expected = 1.7 * base.double()(X).to_dense()
        torch.testing.assert_close(k(X).to_dense(), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(k(X, diag=True), expected.diagonal(), rtol=1e-12, atol=1e-12)


def _graph_names(t: torch.Tensor) -> list[str]:
    """Names of every node in ``t``'s autograd graph."""
    seen, todo, names = set(), [t.grad_fn], []
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        todo.extend(f for f, _ in node.next_functions)
    return names


def test_mauna_loa_composite_uses_the_fused_node_for_every_component():
    """Rasmussen's CO₂ kernel (long RBF + RBF × periodic + RQ, each scaled): three fused nodes, autograd's gradients.

    The scaled RBF × periodic is one node (one exponential profile on concatenated features, its outputscale
    inside), and each scaled term is a node whose output the sum adds directly (no product or scale pass).
    """
    k = kernels
    covar = (
        k.ScaleKernel(k.RBFKernel()) + k.ScaleKernel(k.RBFKernel() * k.PeriodicKernel()) + k.ScaleKernel(k.RQKernel())
    )
    covar = _randomise(covar.double())
    g = torch.Generator().manual_seed(7)
    X = torch.rand(40, 1, generator=g, dtype=torch.float64) * 5
    y = torch.sin(6 * X[:, 0]) + 0.1 * X[:, 0]
    lik = torchgp.likelihoods.GaussianLikelihood().double()

    class GP(torchgp.models.ExactGP):
        def __init__(self):
            super().__init__(X, y, lik)
            self.mean_module = torchgp.means.ConstantMean()
            self.covar_module = covar

        def forward(self, x):
            return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    model = GP().double()
    mll = torchgp.mlls.ExactMarginalLogLikelihood(lik, model)
    K = covar(X).to_dense()
    assert _graph_names(K).count("StationaryCovarianceBackward") == 3
    outer = K.grad_fn
    terms = [f for f, _ in outer.next_functions] + [f for f, _ in outer.next_functions[0][0].next_functions]
    assert sorted(type(f).__name__ for f in terms) == ["AddBackward0"] + ["StationaryCovarianceBackward"] * 3
    results = []
    for fused in (False, True):
        with settings.fused_kernels(fused):
            loss = -mll(model(X), y)
        results.append((loss.detach(), torch.autograd.grad(loss, list(model.parameters()))))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-12, atol=1e-12)
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("nu", [1.5, 2.5])
def test_outputscale_gradient_with_column_major_upstream_gradient(nu):
    """``∂L/∂s = Σ G∘k`` for a column-major, asymmetric ``G`` (the layout of a batched Cholesky inverse)."""
    base = _randomise(kernels.MaternKernel(nu=nu, ard_num_dims=3, batch_shape=torch.Size([2])).double())
    s = torch.tensor([0.7, 1.3], dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 110, 3, generator=g, dtype=torch.float64)  # r² in Gram form: K symmetric to rounding
    G = torch.randn(2, 110, 110, generator=g, dtype=torch.float64)
    G_col = G.mT.contiguous().mT
    assert not G_col.is_contiguous() and torch.equal(G_col, G)
    K = base.evaluate_block(x, x, outputscale=s)
    (ds_col,) = torch.autograd.grad(K, s, G_col, retain_graph=True)
    (ds_row,) = torch.autograd.grad(K, s, G)
    expected = (G * (K.detach() / s.detach()[:, None, None])).sum((-2, -1))
    torch.testing.assert_close(ds_col, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ds_row, expected, rtol=1e-12, atol=1e-12)
