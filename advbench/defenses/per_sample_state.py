"""State a defense keeps per training example, by dataset index (MMA's and CAT's per-sample radii), and the
batch's dataset indices. A helper module: it registers no defense."""

from __future__ import annotations

import torch

from advbench.core import distributed


class PerSampleStore:
    """A per-dataset-index float store (MMA's eps_i, CAT's eps_i) that grows on demand and survives resume.

    Under distributed training every rank updates the samples of its part of each batch; the trainer
    calls :meth:`sync_ranks` (through :meth:`Defense.sync_ranks`) so that every rank sees every update.
    """

    def __init__(self, default: float = 0.0) -> None:
        self.default = default
        self.values = torch.empty(0)
        self._touched: list[torch.Tensor] = []

    def _grow(self, n: int) -> None:
        if n > self.values.numel():
            extra = torch.full((n - self.values.numel(),), self.default)
            self.values = torch.cat([self.values, extra])

    def get(self, idx: torch.Tensor) -> torch.Tensor:
        """Values at dataset indices ``idx`` (the default for indices never seen)."""
        idx = idx.detach().long().cpu()
        self._grow(int(idx.max()) + 1 if idx.numel() else 0)
        return self.values[idx].clone()

    def set(self, idx: torch.Tensor, values: torch.Tensor) -> None:
        """Store ``values`` at dataset indices ``idx``."""
        idx = idx.detach().long().cpu()
        self._grow(int(idx.max()) + 1 if idx.numel() else 0)
        self.values[idx] = values.detach().to(self.values.dtype).cpu()
        if distributed.is_distributed():
            self._touched.append(idx)

    def sync_ranks(self) -> None:
        """Apply every rank's updates since the last sync on every rank (a no-op for one process).

        Within an epoch each sample belongs to exactly one rank's part of one batch, so the updates of
        different ranks never touch the same index between two syncs at epoch boundaries."""
        touched = torch.cat(self._touched) if self._touched else torch.empty(0, dtype=torch.long)
        self._touched = []
        if not distributed.is_distributed():
            return
        mine = (touched, self.values[touched].clone())
        for rank, (idx, vals) in enumerate(distributed.all_gather_objects(mine)):
            if rank != distributed.rank() and idx.numel():
                self._grow(int(idx.max()) + 1)
                self.values[idx] = vals

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The stored values."""
        return {"values": self.values.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`."""
        self.values = torch.as_tensor(state["values"]).clone().float()


def batch_indices(x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """Dataset indices of the batch, or 0..B-1 when the caller gave none (direct calls, benchmarks)."""
    if idx is not None:
        return idx
    return torch.arange(x.shape[0])
