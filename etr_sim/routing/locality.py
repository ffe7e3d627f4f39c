"""Where each expert lives, seen from each token: what locality-aware routers and the locality metric need.

Tokens are assumed to live on the node of their GPU (``gpu_node[src_gpu] == src_node``).
The routing stage must not import traffic/ (imports go downward only), so this module takes the
placement as plain arrays: ``expert_gpu[g, e]`` is the GPU that serves expert e for tokens held by
GPU g (replicas and any placement fit this), and ``gpu_node[g]`` is the server of GPU g. GPU
indices are those of the batch's ``src_gpu``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ExpertLocality:
    """expert_gpu: [G, E] GPU serving each expert for each source GPU; gpu_node: [G] node of each GPU."""

    expert_gpu: np.ndarray
    gpu_node: np.ndarray

    @classmethod
    def from_ranks(cls, ep: int, expert_rank: np.ndarray, gpu_node: np.ndarray) -> "ExpertLocality":
        """EP group q = GPUs [q*ep, (q+1)*ep) holds expert e on rank ``expert_rank[e]``."""
        g = np.arange(len(gpu_node), dtype=np.int64)
        table = (g // ep * ep)[:, None] + np.asarray(expert_rank, dtype=np.int64)[None, :]  # [G, E]
        return cls(table, np.asarray(gpu_node, dtype=np.int64))

    @classmethod
    def from_placement(cls, placement, gpu_node: np.ndarray) -> "ExpertLocality":
        """From any object with ``gpu_of(src_gpu [A], expert [A]) -> [A]`` (traffic.placement.Placement)."""
        g, e = len(gpu_node), placement.num_experts
        src, exp = np.repeat(np.arange(g), e), np.tile(np.arange(e), g)
        return cls(placement.gpu_of(src, exp).reshape(g, e).astype(np.int64), np.asarray(gpu_node, dtype=np.int64))

    @classmethod
    def contiguous_from_batch(cls, num_experts: int, ep: int, src_gpu: np.ndarray, src_node: np.ndarray) -> "ExpertLocality":
        """Default when no placement is given: contiguous experts (E/ep per rank) and the GPU->node map
        read off the batch (GPUs that hold no token get node -1)."""
        num_gpus = int(max(src_gpu.max() + 1 if len(src_gpu) else 0, ep))
        num_gpus = -(-num_gpus // ep) * ep
        gpu_node = np.full(num_gpus, -1, dtype=np.int64)
        gpu_node[src_gpu] = src_node
        return cls.from_ranks(ep, np.arange(num_experts, dtype=np.int64) // max(num_experts // ep, 1), gpu_node)

    def expert_node(self, src_gpu: np.ndarray) -> np.ndarray:
        """[N, E] node of the GPU serving each expert for each token."""
        return self.gpu_node[self.expert_gpu[src_gpu]]

    def assignment_node(self, src_gpu: np.ndarray, expert: np.ndarray) -> np.ndarray:
        """[A] node of the GPU serving ``expert`` for a token on ``src_gpu``."""
        return self.gpu_node[self.expert_gpu[src_gpu, expert]]

    def bonus_table(self, bonus: float):
        """[G, E] float32: ``bonus`` where expert e sits on source GPU g's node, else 0. (torch is
        imported here, not at module level: traffic/ and sim/ import this package without torch.)"""
        import torch

        return torch.from_numpy((self.gpu_node[self.expert_gpu] == self.gpu_node[:, None]).astype(np.float32) * bonus)

    def local_bonus(self, src_gpu: np.ndarray, bonus: float):
        """[N, E] float32: ``bonus`` where the expert sits on the token's node, else 0 (one small
        [G, E] table gathered per token)."""
        import torch

        return self.bonus_table(bonus).index_select(0, torch.from_numpy(np.asarray(src_gpu, dtype=np.int64)))

    def is_local(self, src_gpu: np.ndarray, src_node: np.ndarray) -> np.ndarray:
        """[N, E] bool: the expert sits on the token's own node (intra-node links only)."""
        return self.expert_node(src_gpu) == src_node[:, None]
