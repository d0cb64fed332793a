"""The Kernel base class: diag by forward_diag or aligned pairs, active_dims seen by children, hooks."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp import kernels as K

DT = torch.float64


class BatchedUserKernel(K.Kernel):
    """Written as users write kernels: forward only, a batch of lengthscales of shape (*batch, 1, 1)."""

    def __init__(self, batch_shape=torch.Size()):
        super().__init__(batch_shape=batch_shape)
        self.ell = torch.nn.Parameter(torch.linspace(0.5, 1.5, max(1, batch_shape.numel())).reshape(*batch_shape, 1, 1))

    def forward(self, x1, x2):
        return torch.exp(-torch.cdist(x1, x2) / self.ell)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_batched_user_kernel_diag_is_the_diagonal(n):
    k = BatchedUserKernel(torch.Size([2])).to(DT)
    X, Y = torch.randn(2, n, 3, dtype=DT), torch.randn(2, n, 3, dtype=DT)
    for a, b in ((X, X), (X, Y), (X[0], Y[0])):  # batched inputs, and inputs broadcast against the kernel batch
        d = k(a, b, diag=True)
        assert d.shape == (2, n)
        assert_close(d, k(a, b).to_dense().diagonal(dim1=-2, dim2=-1))


def test_user_kernel_without_batch_diag():
    k = BatchedUserKernel().to(DT)
    X = torch.randn(4, 3, 2, dtype=DT)
    assert_close(k(X, X.flip(-2), diag=True), k(X, X.flip(-2)).to_dense().diagonal(dim1=-2, dim2=-1))


def test_forward_diag_is_used_without_the_matrix():
    calls = []

    class Cheap(K.Kernel):
        def forward(self, x1, x2):
            calls.append("forward")
            return x1 @ x2.mT

        def forward_diag(self, x1, x2):
            calls.append("forward_diag")
            return (x1 * x2).sum(-1)

    X = torch.randn(5, 2, dtype=DT)
    assert_close(Cheap()(X, diag=True), (X * X).sum(-1))
    assert calls == ["forward_diag"]


def test_subclass_rewriting_forward_does_not_inherit_forward_diag():
    class Doubled(K.ScaleKernel):
        def forward(self, x1, x2, **params):
            return 2 * super().forward(x1, x2, **params)

    k = Doubled(K.RBFKernel()).to(DT)
    X = torch.randn(4, 2, dtype=DT)
    assert_close(k(X, diag=True), k(X).to_dense().diagonal())


def test_gpytorch_style_forward_with_diag_keeps_working():
    class Old(K.Kernel):
        def forward(self, x1, x2, diag=False, **params):
            return (x1 * x2).sum(-1) + 1 if diag else x1 @ x2.mT + 1

    X = torch.randn(4, 2, dtype=DT)
    assert_close(Old()(X, diag=True), (X * X).sum(-1) + 1)


def test_children_see_the_parents_columns():
    X = torch.randn(6, 3, dtype=DT)
    k = K.ScaleKernel(K.RBFKernel(ard_num_dims=2), active_dims=[0, 2]).to(DT)
    out = k(X).to_dense()
    ref = K.ScaleKernel(K.RBFKernel(ard_num_dims=2)).to(DT)
    ref.load_state_dict(k.state_dict(), strict=False)
    assert_close(out, ref(X[:, [0, 2]]).to_dense())
    with pytest.raises(torchgp.errors.ShapeError, match="ard_num_dims=2"):
        K.ScaleKernel(K.RBFKernel(ard_num_dims=2), active_dims=[0, 1, 2])(X)
    # the child's active_dims index the parent's selection: columns [2, 0] → the child's [1] is column 0
    nested = K.ScaleKernel(K.RBFKernel(ard_num_dims=1, active_dims=[1]), active_dims=[2, 0]).to(DT)
    flat = K.ScaleKernel(K.RBFKernel(ard_num_dims=1)).to(DT)
    flat.load_state_dict(nested.state_dict(), strict=False)
    assert_close(nested(X).to_dense(), flat(X[:, [0]]).to_dense())
    with pytest.raises(torchgp.errors.ShapeError, match="active_dims"):
        K.ScaleKernel(K.RBFKernel(active_dims=[2]), active_dims=[0, 1])(X)


def test_forward_hooks_fire_and_keep_laziness():
    k = K.RBFKernel().to(DT)
    seen = []
    h1 = k.register_forward_pre_hook(lambda mod, args: seen.append(("pre", len(args))))
    h2 = k.register_forward_hook(lambda mod, args, out: seen.append(("post", type(out).__name__)))
    X = torch.randn(4, 2, dtype=DT)
    out = k(X)
    assert isinstance(out, torchgp.linalg.operators.Operator)
    assert k(X, diag=True).shape == (4,)
    assert seen == [("pre", 1), ("post", type(out).__name__), ("pre", 1), ("post", "Tensor")]
    h1.remove(), h2.remove()
    k(X)
    assert len(seen) == 4


def test_hooks_can_replace_inputs_and_outputs():
    k = K.RBFKernel().to(DT)
    X = torch.randn(4, 2, dtype=DT)
    k.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
    assert_close(k(X).to_dense(), torch.ones(4, 4, dtype=DT))
    k2 = K.RBFKernel().to(DT)
    k2.register_forward_hook(lambda mod, args, kwargs, out: kwargs["diag"] * 2 + out, with_kwargs=True)
    assert_close(k2(X, diag=True), torch.full((4,), 3.0, dtype=DT))
    k3 = K.RBFKernel().to(DT)
    k3.register_forward_pre_hook(lambda mod, args, kwargs: (args, {**kwargs, "diag": True}), with_kwargs=True)
    assert k3(X).shape == (4,)


def test_hooks_fire_on_child_kernels_inside_models():
    # a ScaleKernel evaluates its base kernel through evaluate_block: hooks on the outer call fire once
    k = K.ScaleKernel(K.RBFKernel()).to(DT)
    seen = []
    k.register_forward_hook(lambda *a: seen.append(1))
    k(torch.randn(3, 1, dtype=DT)).to_dense()
    assert seen == [1]
