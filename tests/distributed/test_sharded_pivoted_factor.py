"""The row-sharded pivoted Cholesky factor on 2 gloo ranks: the pivots and factor of ``pivoted_cholesky`` (float64).

Its blocks choose their pivots from a replicated candidate sub-problem, ending where a residual outside the
candidates may be the largest; the residual-trace stop is summed once per block and cut back to the step where
the unsharded factor stops. The cases force each path: blocks ended by the bound (3 candidates), stops in the
middle of a block or below the floor, ties (a kernel matrix equal to the identity), a batch, given pivots, a
dense operator.
"""

from __future__ import annotations

import torch

import torchgp
from tests._tol import tol
from tests.distributed import _spawn
from torchgp.linalg import DenseOperator, KernelOperator
from torchgp.linalg import sharded_pivoted_factor as spf
from torchgp.linalg.pivoted_factor import _REL_FLOOR, pivoted_cholesky

N, D = 157, 2  # odd n: the two row blocks differ in size


class _Counted:
    """A shard that records the ``what`` of each collective it runs."""

    def __init__(self, shard):
        self.shard, self.rank, self.world_size, self.names = shard, shard.rank, shard.world_size, []

    def all_reduce(self, tensors, what):
        self.names.append(what)
        return self.shard.all_reduce(tensors, what)


def _operator(sharded: bool, lengthscale=0.8, batch: bool = False, dense: bool = False):
    X = torch.rand(N, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3
    base = torchgp.kernels.RBFKernel(batch_shape=torch.Size([2]) if batch else torch.Size()).double()
    base.lengthscale = torch.tensor([[[0.8]], [[1.0]]]) if batch else lengthscale
    kernel = torchgp.distributed.ShardedKernel(base) if sharded else base
    op = KernelOperator(kernel, X, X)
    shard = kernel.tile_shard if sharded else None
    if dense:
        op = DenseOperator(KernelOperator(base, X, X).to_dense().detach())
    return op, shard


# name: (operator keywords, rank, abs_tol, (candidates, block) of the sharded factor)
_CASES = {
    "to the floor": ({}, N, None, None),
    "3 candidates": ({}, N, None, (3, 5)),
    "abs_tol mid-block": ({}, N, "step 37", None),
    "abs_tol mid-block, 3 candidates": ({}, N, "step 37", (3, 5)),
    "abs_tol in the last block": ({}, 50, "step 37", None),
    "abs_tol below the floor": ({}, N, 1e-30, None),  # the floor stops it; the residual traces summed at the end
    "rank": ({}, 45, None, None),
    # K = I exactly (held dense: a kernel row evaluated against other columns may see ‖x - x‖² ≈ 1e-16 / ℓ²):
    # every residual 1, pivots 0, 1, 2, ...
    "ties": ({"lengthscale": 1e-5, "dense": True}, 12, None, None),
    "batch": ({"batch": True}, N, "step 37", (3, 5)),
    "dense": ({"dense": True}, N, None, (4, 7)),
}


def _abs_tol(case: str):
    """``abs_tol`` halfway between the unsharded factor's residual traces before steps 36 and 37 (per member)."""
    kw, rank, tol, _ = _CASES[case]
    if tol != "step 37":
        return tol
    op, _ = _operator(False, **kw)
    traces = [pivoted_cholesky(op, k).square().sum(-2).sum(-1) for k in (36, 37)]
    diag = op.diagonal().sum(-1)
    return diag - (traces[0] + traces[1]) / 2  # tr(K - L_k L_kᵀ) = tr K - ‖L_k‖²


def _reference(case: str):
    kw, rank, _, _ = _CASES[case]
    op, _ = _operator(False, **kw)
    return pivoted_cholesky(op, rank, abs_tol=_abs_tol(case), return_pivots=True)


def _worker(rank, world_size):
    out = {}
    default = (spf._CANDIDATES, spf._BLOCK)
    for case, (kw, k, _, blocks) in _CASES.items():
        spf._CANDIDATES, spf._BLOCK = blocks or default
        op, shard = _operator(True, **{key: v for key, v in kw.items() if key != "dense"})
        if kw.get("dense"):
            op = _operator(False, **kw)[0]
        shard = _Counted(shard)
        L, piv = spf.sharded_pivoted_cholesky(op, k, shard, _REL_FLOOR[torch.float64], abs_tol=_abs_tol(case))
        out[case] = {"L": L, "pivots": piv, "collectives": shard.names}
        # The same pivots given: one collective per block of _BLOCK pivots, none per step.
        given = _Counted(shard.shard)
        L2, piv2 = spf.sharded_pivoted_cholesky(op, 0, given, _REL_FLOOR[torch.float64], pivots=piv)
        out[case].update(given_L=L2, given_pivots=piv2, given_collectives=given.names)
    spf._CANDIDATES, spf._BLOCK = default
    return out


def test_sharded_factor_equals_pivoted_cholesky(tmp_path):
    ranks = _spawn.run(_worker, tmp_path)
    for case, (_, rank, stop, blocks) in _CASES.items():
        L_ref, piv_ref = _reference(case)
        k = piv_ref.shape[-1]
        if stop == "step 37":
            assert k == 37, case  # the stop at step 37, inside a block
        elif case == "rank":
            assert k == rank
        elif case == "ties":
            assert torch.equal(piv_ref, torch.arange(rank))
        else:
            assert 40 < k < rank, case  # stopped by the floor
        block = blocks[1] if blocks else spf._BLOCK
        for res in ranks:
            assert torch.equal(res[case]["pivots"], piv_ref), case
            assert torch.equal(res[case]["given_pivots"], piv_ref), case
            names = res[case]["collectives"]
            blocks_run = names.count("candidate pivots of the preconditioner")
            # About two collectives per block, never one per pivot.
            assert len(names) <= 2 * blocks_run + 1, (case, names)
            if not blocks and case != "ties":
                # 129 candidates of 157 rows: the bound ends blocks after a few pivots here (at n = 20,000 nearly
                # as late as the unsharded factor's: 46 blocks for 1789 pivots, against 40), still far from a
                # collective per pivot.
                assert len(names) <= k // 3, (case, names)
            if blocks:
                assert blocks_run > -(-k // block), case  # some blocks ended by the bound before their length
            if case == "ties":
                assert blocks_run == rank  # every residual ties with the bound: one pivot per block
            if case == "abs_tol below the floor":
                assert names[-1] == "residual trace of the preconditioner factor"
            assert res[case]["given_collectives"] == ["candidate rows of the preconditioner factor"] * -(-k // block)
        for key in ("L", "given_L"):
            L = torch.cat([res[case][key] for res in ranks], -2)
            assert L.shape == L_ref.shape, (case, key)
            err = (L - L_ref).norm() / L_ref.norm()
            # Reordered sums: ~1e-16, divided by √d_piv down to 1e-4 at the floor (measured 2e-11 there).
            assert err <= tol(torch.float64)["rtol"], f"{case} {key}: relative error {err:.2e}"
