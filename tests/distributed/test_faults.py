"""A rank killed mid-training ends the job on the other with a clear error; checkpoints resume on fewer ranks."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import torchgp
from tests._tol import tol
from tests.distributed import _spawn
from tests.distributed.test_data_parallel import BATCH, _elbo


class _DyingDataset(TensorDataset):
    """Kills its own process (SIGKILL, no clean-up) at the ``die_at``-th item fetched, if ``die_at`` is set."""

    def __init__(self, X, y, die_at=None):
        super().__init__(X, y)
        self.die_at, self.fetched = die_at, 0

    def __getitem__(self, i):
        self.fetched += 1
        if self.die_at is not None and self.fetched >= self.die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(i)


def _worker(rank, world_size, ckpt, out_dir):
    elbo, X, y = _elbo(False)
    loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, shuffle=True)
    torchgp.distributed.fit(elbo, loader, "adam", maxiter=2, lr=0.05, checkpoint=ckpt)
    if rank == 0:
        torch.save([p.detach().clone() for p in elbo.parameters()], os.path.join(out_dir, "after2.pt"))
    # Resume (epoch 2 on), rank 1 dies in the middle of epoch 2.
    dying = DataLoader(_DyingDataset(X, y, die_at=20 if rank == 1 else None), batch_size=BATCH, shuffle=True)
    start = time.monotonic()
    try:
        torchgp.distributed.fit(elbo, dying, "adam", maxiter=5, lr=0.05, checkpoint=ckpt)
    except torchgp.distributed.RankLostError as err:
        torch.save(
            {"message": str(err), "lost": err.lost_ranks, "elapsed": time.monotonic() - start},
            os.path.join(out_dir, "error.pt"),
        )
        raise
    return "finished"


def test_killed_rank_ends_job_and_checkpoint_resumes_on_one(tmp_path):
    ckpt = str(tmp_path / "svgp.ckpt")
    codes, results = _spawn.run(_worker, tmp_path, args=(ckpt, str(tmp_path)), expect_failure=True, deadline=120)
    assert codes[1] == -signal.SIGKILL
    assert codes[0] not in (0, None)  # exited non-zero, did not hang
    assert not results  # no rank finished
    err = torch.load(tmp_path / "error.pt", weights_only=False)
    assert err["lost"] == (1,)
    assert "rank 1 of 2 was lost" in err["message"] and "timeout" in err["message"].lower()
    assert err["elapsed"] < _spawn.COLLECTIVE_TIMEOUT

    # The checkpoint of epoch 1 (written by rank 0 of 2) is whole and resumes on one process.
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
    elbo, X, y = _elbo(False)
    adam = torch.optim.Adam(elbo.parameters(), lr=0.05)
    state = torchgp.distributed.load_checkpoint(ckpt, elbo, adam)
    assert state["epoch"] == 1 and state["world_size"] == 2
    after2 = torch.load(tmp_path / "after2.pt", weights_only=False)
    for p, p_ref in zip(elbo.parameters(), after2):
        torch.testing.assert_close(p.detach(), p_ref, **tol(torch.float64))
    elbo, X, y = _elbo(False)
    loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, shuffle=True)
    result = torchgp.distributed.fit(elbo, loader, "adam", maxiter=4, lr=0.05, checkpoint=ckpt)
    assert result.iterations == 2  # epochs 2 and 3 only
    assert torchgp.distributed.load_checkpoint(ckpt, elbo, torch.optim.Adam(elbo.parameters()))["world_size"] == 1


def _sharded_worker(rank, world_size, out_dir, how):
    from tests.distributed.test_sharded_exact import _experiment
    from torchgp.distributed import process_group

    if rank == 1:
        if how == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(3 * _SHORT_TIMEOUT)  # alive but not answering
        return "slept"
    # The clock starts at the first collective (the time to build the model before it is not the library's).
    first: list[float] = []
    all_reduce = process_group.all_reduce_

    def clocked(*args, **kwargs):
        if not first:
            first.append(time.monotonic())
        return all_reduce(*args, **kwargs)

    process_group.all_reduce_ = clocked
    try:
        _experiment(sharded=True)
    except torchgp.distributed.RankLostError as err:
        torch.save(
            {"message": str(err), "lost": err.lost_ranks, "elapsed": time.monotonic() - first[0]},
            os.path.join(out_dir, "error.pt"),
        )
        raise
    finally:
        process_group.all_reduce_ = all_reduce
    return "finished"


_SHORT_TIMEOUT = 4.0


@pytest.mark.parametrize("how", ["die", "hang"])
def test_sharded_kernel_names_the_lost_rank(tmp_path, how):
    codes, _ = _spawn.run(
        _sharded_worker, tmp_path, args=(str(tmp_path), how), expect_failure=True, timeout=_SHORT_TIMEOUT
    )
    assert codes[0] not in (0, None)
    err = torch.load(tmp_path / "error.pt", weights_only=False)
    assert err["lost"] == (1,)
    # The first collective of the sharded path is the preconditioner's search for candidate pivots; the message
    # names it.
    assert "rank 1 of 2 was lost" in err["message"]
    assert "all_reduce of the sharded candidate pivots of the preconditioner" in err["message"]
    assert f"Collective timeout: {_SHORT_TIMEOUT:g} s" in err["message"]
    # From the first collective: a dead peer is noticed at once, before any timeout could fire (then the grace
    # to check in); a silent one once the timeout has run out, not before, and then the grace. The margin is
    # for a loaded machine's scheduling and is smaller than a second timeout, so a retried wait would fail.
    grace = torchgp.distributed.process_group.check_in_grace(_SHORT_TIMEOUT)
    if how == "die":
        assert err["elapsed"] < _SHORT_TIMEOUT
    else:
        assert _SHORT_TIMEOUT <= err["elapsed"] < _SHORT_TIMEOUT + grace + 0.75 * _SHORT_TIMEOUT


def test_checkpoint_errors(tmp_path):
    elbo, _, _ = _elbo(False)
    with pytest.raises(torchgp.errors.InputError, match="no checkpoint"):
        torchgp.distributed.load_checkpoint(str(tmp_path / "missing.ckpt"), elbo)
    torchgp.distributed.save_checkpoint(str(tmp_path / "a.ckpt"), elbo, [], epoch=0)
    with pytest.raises(torchgp.errors.InputError, match="optimiser"):
        torchgp.distributed.load_checkpoint(str(tmp_path / "a.ckpt"), elbo, torch.optim.Adam(elbo.parameters()))


def test_init_without_torchrun_is_a_no_op_with_a_message(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.warns(UserWarning, match="not launched by torchrun"):
        assert torchgp.distributed.init() is False
    assert not torch.distributed.is_initialized()
    with pytest.raises(torchgp.errors.InputError, match="timeout"):
        torchgp.distributed.init(timeout=0)
