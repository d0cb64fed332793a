"""What ``torchgp fit ... --distributed`` does under torchrun: one group, shared kernel products, rank 0 reports.

Every rank reads the same table, makes the same split and fits the same exact GP with its kernel
wrapped in :class:`~torchgp.distributed.ShardedKernel`; the ranks run identical L-BFGS-B iterations
(same loss and gradients everywhere). Only rank 0 prints and writes files: the other ranks'
standard output goes to ``os.devnull`` and their output folder to a temporary one that is removed
at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

from torchgp.distributed import process_group
from torchgp.distributed.sharded_kernel import ShardedKernel

__all__ = ["prepare_cli", "shard_model", "unshard_model"]


def prepare_cli(args):
    """Initialise the process group for a ``--distributed`` command; silence ranks other than 0.

    Args:
        args: the parsed command line (``args.out`` and ``args.no_plot`` are changed on ranks > 0).

    Returns:
        ``args``.
    """
    process_group.init()
    if process_group.rank() > 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        scratch = tempfile.mkdtemp(prefix=f"torchgp-rank{process_group.rank()}-")
        atexit.register(shutil.rmtree, scratch, True)
        args.out = scratch
        args.no_plot = True
    return args


def shard_model(model):
    """Wrap ``model.covar_module`` in a :class:`ShardedKernel` (the same parameters); returns ``model``."""
    if not isinstance(model.covar_module, ShardedKernel):
        model.covar_module = ShardedKernel(model.covar_module)
    return model


def unshard_model(model):
    """Undo :func:`shard_model`, so the model saves and predicts as a one-process model; returns ``model``."""
    if isinstance(model.covar_module, ShardedKernel):
        model.covar_module = model.covar_module.base_kernel
    return model
