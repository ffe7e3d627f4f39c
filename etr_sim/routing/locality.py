"""Where each expert lives, seen from each token: what locality-aware routers and the locality metric need.

The routing stage must not import traffic/ (imports go downward only), so this module takes the
placement as plain arrays: EP group q = GPUs [q*ep, (q+1)*ep) holds every expert once, expert e on
rank ``expert_rank[e]`` of the group, and ``gpu_node[g]`` is the server of GPU g.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ExpertLocality:
    """expert_rank: [E] rank inside the EP group hosting each expert; gpu_node: [G] node of each GPU."""

    ep: int
    expert_rank: np.ndarray
    gpu_node: np.ndarray

    @classmethod
    def contiguous_from_batch(cls, num_experts: int, ep: int, src_gpu: np.ndarray, src_node: np.ndarray) -> "ExpertLocality":
        """Default when no placement is given: contiguous experts (E/ep per rank) and the GPU->node map
        read off the batch (GPUs that hold no token get node -1)."""
        num_gpus = int(max(src_gpu.max() + 1 if len(src_gpu) else 0, ep))
        num_gpus = -(-num_gpus // ep) * ep
        gpu_node = np.full(num_gpus, -1, dtype=np.int64)
        gpu_node[src_gpu] = src_node
        return cls(ep, np.arange(num_experts, dtype=np.int64) // max(num_experts // ep, 1), gpu_node)

    def expert_gpu(self, src_gpu: np.ndarray) -> np.ndarray:
        """[N, E] GPU serving each expert for each token (its EP group's replica)."""
        return (src_gpu // self.ep * self.ep)[:, None] + self.expert_rank[None, :]

    def expert_node(self, src_gpu: np.ndarray) -> np.ndarray:
        """[N, E] node of the GPU serving each expert for each token."""
        return self.gpu_node[self.expert_gpu(src_gpu)]

    def is_local(self, src_gpu: np.ndarray, src_node: np.ndarray) -> np.ndarray:
        """[N, E] bool: the expert sits on the token's own node (intra-node links only)."""
        return self.expert_node(src_gpu) == src_node[:, None]
