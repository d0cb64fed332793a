"""The row-sharded pivoted-Cholesky preconditioner on 2 gloo ranks equals the unsharded one (float64)."""

from __future__ import annotations

import torch

import torchgp
from tests.distributed import _spawn
from torchgp.linalg import KernelOperator
from torchgp.linalg import sharded_pivoted_factor as spf
from torchgp.linalg import sharded_preconditioner as sp
from torchgp.linalg.pivoted_cholesky import PivotedCholeskyPreconditioner, build_preconditioner
from torchgp.linalg.sharded_preconditioner import ShardedPivotedCholeskyPreconditioner

N, D, RANK, T = 157, 3, 40, 5  # odd n: the two row blocks differ in size


def _data():
    g = torch.Generator().manual_seed(11)
    X = torch.rand(N, D, generator=g, dtype=torch.float64)
    V = torch.randn(N, T, generator=g, dtype=torch.float64)
    return X, V


def _into_columns(P, k: int) -> torch.Tensor:
    """``P.leading_factor(k, out=...)`` into columns 2..2+k of a NaN-filled buffer; the other columns must stay NaN."""
    buf = torch.full((*P.D.shape[:-1], N, k + 3), float("nan"), dtype=P.D.dtype)
    got = P.leading_factor(k, out=buf[..., 2 : 2 + k])
    assert got.data_ptr() == buf[..., 2 : 2 + k].data_ptr()
    assert buf[..., :2].isnan().all() and buf[..., 2 + k :].isnan().all()
    return buf[..., 2 : 2 + k].clone()


def _build(sharded: bool, noise: bool, reuse: bool = False, rank: int = RANK, batched: bool = False):
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
    if batched:  # two noise levels: D has a batch that L lacks (the factor is then scaled into a copy)
        d = torch.stack([d, 4 * d])
    P = build_preconditioner(op, d, rank, pivots=pivots)
    big = [v for name, v in vars(P).items() if name != "R" and isinstance(v, torch.Tensor) and v.dim() >= 2]
    factor_arrays = len([v for v in big if v.shape[-1] == P.rank and v.shape[-2] >= N // 2])
    del big
    return {
        "kind": type(P).__name__,
        "local_rows": P.local_rows if sharded else P.W.shape[-2],
        # the arrays of n (or n/p) rows by k columns the preconditioner holds
        "factor_arrays": factor_arrays,
        "rank": P.rank,
        "solve": P.solve(V),
        "logdet": P.logdet(),
        "inv_diagonal": P.inv_diagonal(),
        "leading": P.leading_factor(7),
        # the same columns written into a column slice of a caller's buffer (sharded only: the unsharded has no out)
        "leading_out": _into_columns(P, 7) if sharded else P.leading_factor(7),
        "sample": P.sample(T, torch.Generator().manual_seed(5)),
        "D": P.D,
        "pivots": P.pivots,
        **(_released(P) if sharded else {"leading_released": P.leading_factor(7), "factor_freed": True}),
    }


def _released(P) -> dict:
    """``leading_factor(release=True)``: the same columns, the factor's storage freed, any later solve refused."""
    import weakref

    factor = weakref.ref(P.LD)
    leading = _into_columns_released(P, 7)
    try:
        P.solve(_data()[1])
        refused = False
    except RuntimeError as err:
        refused = "released" in str(err)
    return {"leading_released": leading, "factor_freed": factor() is None and refused and P.rank > 0}


def _into_columns_released(P, k: int) -> torch.Tensor:
    buf = torch.full((*P.D.shape[:-1], N, k), float("nan"), dtype=P.D.dtype)
    return P.leading_factor(k, out=buf, release=True)


_CASES = {  # name: (noise, build keywords)
    "noise": (True, {}),
    "noiseless": (False, {}),
    "reuse": (True, {"reuse": True}),
    "early stop": (True, {"rank": 150}),  # the factor stops before its maximum rank: the buffer's tail unused
    "batched noise": (True, {"batched": True}),
}


def _worker(rank, world_size):
    out = {case: _build(True, noise, **kw) for case, (noise, kw) in _CASES.items()}
    # Blocks of a few numbers: the core, W's columns and diag(P⁻¹) by many row blocks, the factor gathered by columns.
    sp._BLOCK_NUMBERS = 64
    out["small blocks"] = _build(True, True)
    # Blocks of 5 columns from 3 candidates: pivots outside the candidates end blocks early, many refreshes.
    spf._CANDIDATES, spf._BLOCK = 3, 5
    out["tiny factor blocks"] = _build(True, True, rank=150)
    out["tiny factor blocks, reuse"] = _build(True, True, reuse=True)
    return out


def test_sharded_preconditioner_equals_unsharded(tmp_path):
    ranks = _spawn.run(_worker, tmp_path)
    extra = {
        "small blocks": (True, {}),
        "tiny factor blocks": (True, {"rank": 150}),
        "tiny factor blocks, reuse": (True, {"reuse": True}),
    }
    for case, (noise, kw) in {**_CASES, **extra}.items():
        ref = _build(False, noise, **kw)
        assert ref["kind"] == PivotedCholeskyPreconditioner.__name__
        if case in ("early stop", "tiny factor blocks"):
            assert 40 < ref["rank"] < 150
        for r, out in enumerate(ranks):
            res = out[case]
            assert res["kind"] == ShardedPivotedCholeskyPreconditioner.__name__
            assert res["rank"] == ref["rank"] > 0
            assert torch.equal(res["pivots"], ref["pivots"])
            # Each rank holds only its rows of the n × k factor: 78 and 79 of 157, in one array (D⁻¹L: no W, no L).
            assert res["local_rows"] == (N // 2 if r == 0 else N - N // 2)
            assert res["factor_arrays"] == 1
            assert res["factor_freed"]
            for key in ("solve", "logdet", "inv_diagonal", "leading", "leading_out", "leading_released", "sample", "D"):
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
