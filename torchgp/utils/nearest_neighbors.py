r"""Exact k-nearest-neighbour search in torch, blockwise (GPyTorch's ``NNUtil``).

Distances are Euclidean, computed exactly (no ``‖x‖² - 2xᵀy + ‖y‖²`` expansion, whose cancellation
reorders near ties) in blocks of query rows, so memory stays ``O(block · n + n · k)``. The faiss and
scikit-learn back ends of GPyTorch are not needed: ``preferred_nnlib`` is accepted and recorded only.
"""

from __future__ import annotations

import torch

from torchgp.errors import InputError, ShapeError

__all__ = ["NNUtil"]

_BLOCK_ENTRIES = 2**22  # distances held at once (32 MiB in float64)


def _knn(queries: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(q, k)`` of the k nearest rows of ``points (n, d)`` for each row of ``queries (q, d)``."""
    n = points.shape[0]
    block = max(1, _BLOCK_ENTRIES // max(n, 1))
    out = []
    for s in range(0, queries.shape[0], block):
        dist = torch.cdist(queries[s : s + block], points, compute_mode="donot_use_mm_for_euclid_dist")
        out.append(dist.topk(k, dim=-1, largest=False, sorted=True).indices)
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long, device=points.device)


class NNUtil(torch.nn.Module):
    r"""k nearest neighbours among training points, and the sequential neighbour sets of Vecchia-type models.

    Args:
        k: number of neighbours.
        dim: input dimension ``d``.
        batch_shape: batch of independent point sets (``torch.Size``).
        preferred_nnlib: accepted for compatibility ("faiss", "sklearn"); the search always runs in torch.
        device: where the search runs.

    Shapes:
        ``set_nn_idx(train_x (*batch, n, d))``; ``find_nn_idx(test_x (*batch, t, d))`` → ``(*batch, t, k)``;
        ``build_sequential_nn_idx(x (*batch, N, d))`` → ``(*batch, N - k, k)``.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
        >>> nn = NNUtil(k=2, dim=1); nn.set_nn_idx(x)
        >>> nn.find_nn_idx(torch.tensor([[2.9]])).tolist()
        [[2, 1]]
        >>> nn.build_sequential_nn_idx(x).tolist()  # neighbours of x[2], x[3] among the points before them
        [[1, 0], [2, 1]]
    """

    def __init__(self, k, dim, batch_shape=torch.Size([]), preferred_nnlib="faiss", device="cpu"):
        super().__init__()
        if not k > 0:
            raise InputError(f"NNUtil: k must be greater than 0; got k = {k}.")
        if not isinstance(batch_shape, torch.Size):
            raise InputError(f"NNUtil: batch_shape must be a torch.Size; got {type(batch_shape).__name__}.")
        self.k = int(k)
        self.dim = int(dim)
        self.batch_shape = batch_shape
        self.preferred_nnlib = preferred_nnlib
        self.nnlib = "torch"
        self.train_n = None
        self.train_x = None
        self.device = torch.device(device)

    def to(self, device):
        """Run the search on ``device`` (stored training points move too)."""
        self.device = torch.device(device)
        if self.train_x is not None:
            self.train_x = self.train_x.to(self.device)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to(
            "cuda" if device is None else torch.device("cuda", device) if isinstance(device, int) else device
        )

    def _expand_and_check_shape(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        if x.shape[:-2] != self.batch_shape or x.shape[-1] != self.dim:
            raise ShapeError(
                f"NNUtil expects points of shape (*batch_shape, n, dim) = ({', '.join(map(str, self.batch_shape))}"
                f"{', ' if self.batch_shape else ''}n, {self.dim}); got {tuple(x.shape)}."
            )
        return x

    def set_nn_idx(self, train_x: torch.Tensor) -> None:
        """Store the points neighbours are searched among; call again whenever they change."""
        train_x = self._expand_and_check_shape(train_x)
        self.train_n = train_x.shape[-2]
        self.train_x = train_x.detach().to(self.device)

    def find_nn_idx(self, test_x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Indices of the ``k`` nearest stored points of each test point, nearest first.

        Args:
            test_x: ``(*batch, t, d)``.
            k: number of neighbours (default: the constructor's ``k``); at most the number of stored points.

        Returns:
            ``(*batch, t, k)`` long tensor on ``test_x``'s device.
        """
        if self.train_x is None:
            raise InputError("NNUtil.find_nn_idx: no points stored yet; call set_nn_idx(train_x) first.")
        k = self.k if k is None else int(k)
        if not 0 < k <= self.train_n:
            raise InputError(f"NNUtil.find_nn_idx: k must be in [1, {self.train_n}] (the stored points); got {k}.")
        test_x = self._expand_and_check_shape(test_x)
        t = test_x.shape[-2]
        with torch.no_grad():
            q = test_x.detach().to(self.device, self.train_x.dtype).reshape(-1, t, self.dim)
            p = self.train_x.reshape(-1, self.train_n, self.dim)
            idx = torch.stack([_knn(q[b], p[b], k) for b in range(p.shape[0])])
        return idx.reshape(*self.batch_shape, t, k).to(test_x.device)

    def build_sequential_nn_idx(self, x: torch.Tensor) -> torch.Tensor:
        """For ``i = k..N-1``, the ``k`` nearest of ``x_0..x_{i-1}`` to ``x_i``, nearest first.

        Args:
            x: ``(*batch, N, d)`` with ``N > k``.

        Returns:
            ``(*batch, N - k, k)`` long tensor; row ``i - k`` belongs to ``x_i``.
        """
        x = self._expand_and_check_shape(x)
        N = x.shape[-2]
        if not self.k < N:
            raise InputError(f"NNUtil.build_sequential_nn_idx: k = {self.k} must be smaller than N = {N}.")
        flat = x.detach().to(self.device).reshape(-1, N, self.dim)
        block = max(1, _BLOCK_ENTRIES // N)
        out = torch.empty(flat.shape[0], N - self.k, self.k, dtype=torch.long, device=self.device)
        with torch.no_grad():
            for b in range(flat.shape[0]):
                for s in range(self.k, N, block):
                    e = min(s + block, N)
                    dist = torch.cdist(flat[b, s:e], flat[b, :e], compute_mode="donot_use_mm_for_euclid_dist")
                    rows = torch.arange(s, e, device=self.device).unsqueeze(-1)
                    cols = torch.arange(e, device=self.device)
                    dist = dist.masked_fill(cols >= rows, float("inf"))  # only points before x_i
                    out[b, s - self.k : e - self.k] = dist.topk(self.k, dim=-1, largest=False, sorted=True).indices
        return out.reshape(*self.batch_shape, N - self.k, self.k).to(x.device)
