"""Run a test body on several local processes (torch.multiprocessing, gloo, 127.0.0.1), with a deadline."""

from __future__ import annotations

import os
import socket
import time

import torch
import torch.multiprocessing as mp

import torchgp

# Collective timeout of the test groups: long enough for a slow CI core, short enough that a broken
# test fails in seconds rather than hanging.
COLLECTIVE_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, fn, world_size, port, out_dir, args, timeout):
    torch.set_num_threads(1)
    torchgp.distributed.init(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timeout,
    )
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        # Every rank finishes its collectives before any tears its group down: a rank that destroys its
        # group (or exits, closing the store rank 0 hosts) while a peer still runs gloo threads can abort
        # that peer at shutdown ("terminate called without an active exception").
        torch.distributed.barrier()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def run(fn, out_dir, world_size=2, args=(), deadline=90.0, expect_failure=False, timeout=COLLECTIVE_TIMEOUT):
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` spawned processes; return their results by rank.

    With ``expect_failure`` the exit codes are returned instead (``{rank: exitcode}``) and the ranks'
    results where they wrote one.
    """
    out_dir = str(out_dir)
    ctx = mp.start_processes(
        _entry,
        args=(fn, world_size, free_port(), out_dir, args, timeout),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    end = time.monotonic() + deadline
    try:
        # Polled rather than ctx.join(): join() terminates the other processes as soon as one fails,
        # and a test of a lost rank needs the survivor to notice the loss by itself.
        while any(p.exitcode is None for p in ctx.processes):
            if time.monotonic() > end:
                raise TimeoutError(f"the {world_size} test processes did not finish within {deadline} s")
            time.sleep(0.05)
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join()
    codes = {r: p.exitcode for r, p in enumerate(ctx.processes)}
    if not expect_failure and any(codes.values()):
        raise RuntimeError(f"test processes failed with exit codes {codes} (their tracebacks are above)")
    results = {}
    for r in range(world_size):
        path = os.path.join(out_dir, f"rank{r}.pt")
        if os.path.exists(path):
            results[r] = torch.load(path, weights_only=False)
    if expect_failure:
        return codes, results
    return [results[r] for r in range(world_size)]
