"""CG split by rows over 2 gloo ranks equals CG replicated on every rank (and the row collectives are exact)."""

from __future__ import annotations

import warnings

import torch

import torchgp
from tests._tol import tol
from tests.distributed import _spawn
from torchgp.distributed import process_group
from torchgp.linalg import AddedDiagOperator, KernelOperator
from torchgp.linalg.cg import pcg
from torchgp.linalg.iterative import _System

N, D, K = 157, 2, 3  # odd n: the row blocks differ in size; 64-point tiles: 3 × 3 blocks, 6 tiles
ITER = 12  # fewer than the tolerance needs (about 25)


def _system(shard_cg: bool, batch: bool):
    g = torch.Generator().manual_seed(5)
    X = torch.rand(N, D, generator=g, dtype=torch.float64) * 3
    B = torch.randn(N, K, generator=g, dtype=torch.float64)
    x0 = torch.randn(N, K, generator=g, dtype=torch.float64)
    base = torchgp.kernels.ScaleKernel(torchgp.kernels.RBFKernel(), batch_shape=torch.Size([2]) if batch else ())
    base = base.double()
    if batch:
        base.outputscale = torch.tensor([1.0, 2.5], dtype=torch.float64)
    kernel = torchgp.distributed.ShardedKernel(base, shard_cg=shard_cg)
    noise = torch.full((N,), 0.5, dtype=torch.float64)
    return _System(AddedDiagOperator(KernelOperator(kernel, X, X), noise)), B, x0


def _solves(shard_cg: bool, batch: bool, fast: bool = True) -> dict:
    """Fixed-length runs (``ITER`` iterations: the sums are only reordered, so they agree to round-off), then
    solves to the tolerance (their step counts may differ by round-off near the stop). ``fast``: the tiles from
    feature rows (``settings.fast_kernel_tiles``), else the kernel module's tiles."""
    out = {}
    tiles = torchgp.settings.fast_kernel_tiles(fast)
    with torchgp.settings.kernel_block_size(64), torchgp.settings.max_preconditioner_size(4), tiles:
        system, B, x0 = _system(shard_cg, batch)
        B, x0 = B.expand(*system.shape[:-2], N, K), x0.expand(*system.shape[:-2], N, K)
        mm, precond = system.matmul_fn(), system.preconditioner()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            X, info = pcg(mm, B, precond.solve, record=True, tol=1e-12, max_iter=ITER)
            out["X"], out["alphas"], out["betas"], out["rz0"] = X, info.alphas, info.betas, info.rz0
            out["steps"], out["residual"] = info.num_steps, info.residual
            out["X_warm"], _ = pcg(mm, B, precond.solve, x0=x0, tol=1e-12, max_iter=ITER)
            out["X_plain"], _ = pcg(mm, B, None, tol=1e-12, max_iter=ITER)  # no preconditioner
            out["X_other"], _ = pcg(mm, B, lambda V: V / 3.0, tol=1e-12, max_iter=ITER)  # a whole-vector one
        out["warned"] = sum(issubclass(w.category, torchgp.errors.ConvergenceWarning) for w in caught)
        out["X_tol"], info = pcg(mm, B, precond.solve, tol=1e-8)
        out["iterations_tol"] = info.iterations
        out["X_tol_warm"], _ = pcg(mm, B, precond.solve, x0=x0, tol=1e-8)
        out["product"] = mm(B)  # called on whole vectors it is the whole product
        out["split"] = type(mm).__name__
    return out


def _collectives(rank: int, world_size: int) -> dict:
    full = torch.arange(2 * N * K, dtype=torch.float64).reshape(2, N, K) * (rank + 1)
    lo, hi = rank * N // world_size, (rank + 1) * N // world_size
    return {
        "gathered": process_group.all_gather_rows(full[..., lo:hi, :], N, "test gather"),
        "scattered": process_group.reduce_scatter_rows(full, N, "test scatter"),
    }


def _worker(rank, world_size):
    return {
        "split": {b: _solves(True, b) for b in (False, True)},
        "split, module tiles": {b: _solves(True, b, fast=False) for b in (False, True)},
        "replicated": {b: _solves(False, b) for b in (False, True)},
        "collectives": _collectives(rank, world_size),
    }


def test_row_split_cg_equals_replicated_cg(tmp_path):
    ranks = _spawn.run(_worker, tmp_path)
    single = {b: _solves(True, b) for b in (False, True)}  # no process group: the plain CG
    close = tol(torch.float64, loose=100)  # the sums are only reordered
    solved = tol(torch.float64, loose=1e3)  # two solutions to a relative residual of 1e-8
    for out in ranks:
        for b in (False, True):
            split, rep = out["split"][b], out["replicated"][b]
            for key in ("X", "alphas", "betas", "product"):  # the two tile routes of the row-split product
                torch.testing.assert_close(out["split, module tiles"][b][key], split[key], **close)
            assert split["split"] == "ShardedMatmul" and rep["split"] != "ShardedMatmul"
            assert single[b]["split"] != "ShardedMatmul"
            assert split["warned"] == rep["warned"] == 4  # every fixed-length run stopped short, and said so
            assert torch.equal(split["steps"], torch.full((*split["steps"].shape[:-1], K), ITER))
            for key in ("X", "alphas", "betas", "rz0", "residual", "X_warm", "X_plain", "X_other", "product"):
                torch.testing.assert_close(split[key], rep[key], **close)
                torch.testing.assert_close(split[key], single[b][key], **close)
            assert abs(split["iterations_tol"] - single[b]["iterations_tol"]) <= 2
            for key in ("X_tol", "X_tol_warm"):
                torch.testing.assert_close(split[key], single[b][key], **solved)
    # Every rank took the same steps and holds the same whole solution, bitwise.
    for b in (False, True):
        for key in ("X", "alphas", "X_warm"):
            assert torch.equal(ranks[0]["split"][b][key], ranks[1]["split"][b][key])
    # The row collectives against their definitions: rank r's rows of the stack, and of the sum over ranks.
    full = torch.arange(2 * N * K, dtype=torch.float64).reshape(2, N, K)
    for r, out in enumerate(ranks):
        lo, hi = r * N // 2, (r + 1) * N // 2
        gathered = torch.cat([full[..., : N // 2, :], 2 * full[..., N // 2 :, :]], -2)
        assert torch.equal(out["collectives"]["gathered"], gathered)
        assert torch.equal(out["collectives"]["scattered"], 3 * full[..., lo:hi, :])
