"""IndexKernel: B = WWᵀ + diag(v) indexed by integer task ids."""

from __future__ import annotations

import pytest
import torch

from tests._tol import assert_close, psd_tol
from torchgp import kernels
from torchgp.errors import InputError


def test_index_kernel_values_psd_and_batch():
    k = kernels.IndexKernel(num_tasks=3, rank=2).double()
    B = k.covar_factor @ k.covar_factor.T + torch.diag(k.var)
    i = torch.tensor([[0], [2], [1], [2]], dtype=torch.float64)
    j = torch.tensor([[1], [0]], dtype=torch.float64)
    assert_close(k(i, j).to_dense(), B[i.long().squeeze(-1)][:, j.long().squeeze(-1)])
    assert_close(k(i, diag=True), B.diagonal()[i.long().squeeze(-1)])
    K = k(i).to_dense()
    assert torch.linalg.eigvalsh(K).min() > -psd_tol(K.dtype)
    kb = kernels.IndexKernel(num_tasks=3, batch_shape=torch.Size([2])).double()
    Kb = kb(i).to_dense()
    for b in range(2):
        Bb = kb.covar_matrix[b]
        assert_close(Kb[b], Bb[i.long().squeeze(-1)][:, i.long().squeeze(-1)])
    assert torch.autograd.gradcheck(
        lambda W: (W @ W.T)[i.long().squeeze(-1)][:, i.long().squeeze(-1)],
        (k.covar_factor.detach().clone().requires_grad_(True),),
    )
    k(i).to_dense().sum().backward()
    assert k.covar_factor.grad is not None and k.raw_var.grad is not None


def test_index_kernel_rejects_bad_indices():
    k = kernels.IndexKernel(num_tasks=2)
    with pytest.raises(InputError, match=r"integer task indices in \[0, 2\)"):
        k(torch.tensor([[0.5], [1.0]])).to_dense()
    with pytest.raises(InputError, match=r"\[0, 2\)"):
        k(torch.tensor([[2.0]])).to_dense()
    with pytest.raises(InputError, match="rank"):
        kernels.IndexKernel(num_tasks=2, rank=3)
