"""The row-sharded pivoted-Cholesky preconditioner on 2 gloo ranks equals the unsharded one (float64)."""

from __future__ import annotations

import torch

import torchgp
from tests.distributed import _spawn
from torchgp.linalg import KernelOperator
from torchgp.linalg.pivoted_cholesky import PivotedCholeskyPreconditioner, build_preconditioner
from torchgp.linalg.sharded_preconditioner import ShardedPivotedCholeskyPreconditioner

N, D, RANK, T = 157, 3, 40, 5  # odd n: the two row blocks differ in size


def _data():
    g = torch.Generator().manual_seed(11)
    X = torch.rand(N, D, generator=g, dtype=torch.float64)
    V = torch.randn(N, T, generator=g, dtype=torch.float64)
    return X, V


def _build(sharded: bool, noise: bool, reuse: bool = False):
    X, V = _data()
    base = torchgp.kernels.RBFKernel().double()
    base.lengthscale = 0.4
    pivots = None
    if reuse:  # the pivots of another lengthscale's factor, as a warm start reuses them
        base.lengthscale = 0.5
        pivots = build_preconditioner(KernelOperator(base, X, X), None, RANK).pivots
        base.lengthscale = 0.4
    kernel = torchgp.distributed.ShardedKernel(base) if sharded else base
    op = KernelOperator(kernel, X, X)
    d = torch.full((N,), 0.05, dtype=torch.float64) if noise else None
    P = build_preconditioner(op, d, RANK, pivots=pivots)
    return {
        "kind": type(P).__name__,
        "local_rows": P.W.shape[-2],
        "rank": P.rank,
        "solve": P.solve(V),
        "logdet": P.logdet(),
        "inv_diagonal": P.inv_diagonal(),
        "leading": P.leading_factor(7),
        "sample": P.sample(T, torch.Generator().manual_seed(5)),
        "D": P.D,
        "pivots": P.pivots,
    }


def _worker(rank, world_size):
    return {"noise": _build(True, True), "noiseless": _build(True, False), "reuse": _build(True, True, reuse=True)}


def test_sharded_preconditioner_equals_unsharded(tmp_path):
    ranks = _spawn.run(_worker, tmp_path)
    for case, noise in (("noise", True), ("noiseless", False), ("reuse", True)):
        ref = _build(False, noise, reuse=case == "reuse")
        assert ref["kind"] == PivotedCholeskyPreconditioner.__name__
        for r, out in enumerate(ranks):
            res = out[case]
            assert res["kind"] == ShardedPivotedCholeskyPreconditioner.__name__
            assert res["rank"] == ref["rank"] > 0
            assert torch.equal(res["pivots"], ref["pivots"])
            # Each rank holds only its rows of the n × k factor: 78 and 79 of 157.
            assert res["local_rows"] == (N // 2 if r == 0 else N - N // 2)
            for key in ("solve", "logdet", "inv_diagonal", "leading", "sample", "D"):
                # Without noise D is the residual diagonal, 1e-8 (its floor) at the pivots, so P⁻¹ has condition
                # ~1e10 and reordered sums differ by ~1e-16 · 1e10 there (measured 5e-10); with noise, 1e-10.
                rtol = 1e-10 if noise or key not in ("solve", "inv_diagonal") else 1e-8
                err = (res[key] - ref[key]).norm() / ref[key].norm()
                assert err <= rtol, f"{case} {key}: relative error {err:.2e} > {rtol:.0e}"
        # And the solve is P⁻¹ for the dense P = L Lᵀ + D built unsharded.
    P = build_preconditioner(KernelOperator(torchgp.kernels.RBFKernel().double(), _data()[0], _data()[0]), None, 3)
    dense = P.L @ P.L.mT + torch.diag(P.D)
    V = _data()[1]
    torch.testing.assert_close(P.solve(V), torch.linalg.solve(dense, V), rtol=1e-8, atol=1e-10)
