"""Expert placement: which GPU hosts each expert of each EP group."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Placement:
    """EP group q = GPUs [q*ep, (q+1)*ep) holds every expert once.

    expert_rank: [E] rank (0..ep-1) inside the EP group that hosts each expert.
    """

    num_gpus: int
    ep: int
    expert_rank: np.ndarray

    @property
    def num_experts(self) -> int:
        return len(self.expert_rank)

    def gpu_of(self, src_gpu: np.ndarray, expert: np.ndarray) -> np.ndarray:
        """[A] GPU that serves ``expert`` for tokens living on ``src_gpu`` (the EP group's replica)."""
        return (src_gpu // self.ep) * self.ep + self.expert_rank[expert]

    @property
    def expert_slot(self) -> np.ndarray:
        """[E] index of each expert among the experts of its host rank (0..E/ep-1)."""
        order = np.argsort(self.expert_rank, kind="stable")
        slot = np.empty(self.num_experts, dtype=np.int64)
        ranks = self.expert_rank[order]
        starts = np.searchsorted(ranks, ranks, side="left")
        slot[order] = np.arange(self.num_experts) - starts
        return slot

    def experts_per_gpu(self) -> np.ndarray:
        """[G] experts hosted by each GPU."""
        per_rank = np.bincount(self.expert_rank, minlength=self.ep)
        return np.tile(per_rank, self.num_gpus // self.ep)


def contiguous(num_experts: int, ep: int, num_gpus: int) -> Placement:
    """Experts 0..E/ep-1 on rank 0, the next E/ep on rank 1, ... (Megatron/DeepSpeed default)."""
    return Placement(num_gpus, ep, np.arange(num_experts, dtype=np.int64) // (num_experts // ep))


PLACEMENTS = {"contiguous": contiguous}
