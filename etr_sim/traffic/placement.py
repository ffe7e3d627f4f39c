"""Expert placement: which GPU hosts each expert (and each replica of a hot expert) of each EP group.

All indices are stage-local (see traffic/layout.py): EP group q is GPUs [q*ep, (q+1)*ep), and every
EP group uses the same rank assignment. An *instance* is one copy of an expert on one rank; a GPU's
instances are its local experts (``slot`` orders them). With replicas, each source GPU sends all its
tokens for an expert to one chosen instance: one on its own node when there is one
(``local_first``), spread over the instances by source GPU otherwise (and always with ``spread``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Placement:
    """instance_expert, instance_rank: [I] expert and EP rank of each instance.
    choice: [G, E] instance each source GPU uses for each expert."""

    num_gpus: int
    ep: int
    num_experts: int
    instance_expert: np.ndarray
    instance_rank: np.ndarray
    choice: np.ndarray

    @property
    def slot(self) -> np.ndarray:
        """[I] index of each instance among the instances of its rank."""
        order = np.argsort(self.instance_rank, kind="stable")
        ranks = self.instance_rank[order]
        slot = np.empty(len(order), dtype=np.int64)
        slot[order] = np.arange(len(order)) - np.searchsorted(ranks, ranks, side="left")
        return slot

    @property
    def slots_per_gpu(self) -> int:
        """Most expert instances any GPU hosts (sets expert weight memory)."""
        return int(np.bincount(self.instance_rank, minlength=self.ep).max())

    def instance_of(self, src_gpu: np.ndarray, expert: np.ndarray) -> np.ndarray:
        return self.choice[src_gpu, expert]

    def gpu_of(self, src_gpu: np.ndarray, expert: np.ndarray) -> np.ndarray:
        """[A] GPU that serves ``expert`` for tokens living on ``src_gpu``."""
        return (src_gpu // self.ep) * self.ep + self.instance_rank[self.instance_of(src_gpu, expert)]


def _build(expert_rank: np.ndarray, ep: int, num_gpus: int, gpu_node: np.ndarray | None,
           replicas: dict[int, list[int]] | None = None, replica_choice: str = "local_first") -> Placement:
    """Placement from each expert's primary rank plus extra replica ranks per expert."""
    num_experts = len(expert_rank)
    inst_e = list(range(num_experts))
    inst_r = [int(r) for r in expert_rank]
    for e, ranks in sorted((replicas or {}).items()):
        for r in ranks:
            inst_e.append(e)
            inst_r.append(int(r))
    inst_e_arr, inst_r_arr = np.asarray(inst_e, dtype=np.int64), np.asarray(inst_r, dtype=np.int64)
    choice = np.tile(np.arange(num_experts, dtype=np.int64), (num_gpus, 1))  # [G, E] primary instance
    node = gpu_node if gpu_node is not None else np.zeros(num_gpus, dtype=np.int64)
    for e in sorted((replicas or {})):
        inst = np.flatnonzero(inst_e_arr == e)  # [R_e]
        for g in range(num_gpus):
            dst_gpu = (g // ep) * ep + inst_r_arr[inst]
            pool = inst
            if replica_choice == "local_first":
                local = inst[node[dst_gpu] == node[g]]
                pool = local if len(local) else inst
            choice[g, e] = pool[g % len(pool)]
    return Placement(num_gpus, ep, num_experts, inst_e_arr, inst_r_arr, choice)


def contiguous(num_experts: int, ep: int, num_gpus: int, gpu_node: np.ndarray | None = None) -> Placement:
    """Experts 0..E/ep-1 on rank 0, the next E/ep on rank 1, ... (Megatron/DeepSpeed default)."""
    return _build(np.arange(num_experts) // (num_experts // ep), ep, num_gpus, gpu_node)


def round_robin(num_experts: int, ep: int, num_gpus: int, gpu_node: np.ndarray | None = None) -> Placement:
    """Expert e on rank e mod ep."""
    return _build(np.arange(num_experts) % ep, ep, num_gpus, gpu_node)


def locality_aware(demand: np.ndarray, ep: int, num_gpus: int, gpu_node: np.ndarray) -> np.ndarray:
    """[E] rank per expert that keeps the most routed tokens on their own node.

    demand: [nodes, E] tokens that sources on each node send to each expert (from a calibration
    routing pass). Greedy: take (node, expert) pairs by demand, largest first, and put the expert on a
    rank of that node with a free slot (E/ep slots per rank); leftovers fill free slots in order.
    Deterministic (ties by index).
    """
    n_nodes, num_experts = demand.shape
    per_rank = num_experts // ep
    rank_node = gpu_node[:ep]  # node of each rank in EP group 0 (every group has the same shape)
    free = np.full(ep, per_rank)
    rank_of = np.full(num_experts, -1)
    order = np.lexsort((np.arange(demand.size), -demand.reshape(-1)))
    for flat in order:
        node, e = divmod(int(flat), num_experts)
        if rank_of[e] >= 0:
            continue
        ranks = np.flatnonzero((rank_node == node) & (free > 0))
        if len(ranks):
            rank_of[e] = ranks[0]
            free[ranks[0]] -= 1
    for e in np.flatnonzero(rank_of < 0):
        r = int(np.flatnonzero(free > 0)[0])
        rank_of[e] = r
        free[r] -= 1
    return rank_of


def hot_replicas(expert_rank: np.ndarray, load: np.ndarray, count: int, ep: int, rank_node: np.ndarray) -> dict[int, list[int]]:
    """One extra replica for each of the ``count`` most loaded experts, on the rank with the least
    load per instance that does not host it yet, preferring another node than its primary."""
    rank_load = np.bincount(expert_rank, weights=load, minlength=ep).astype(float)
    out: dict[int, list[int]] = {}
    for e in np.lexsort((np.arange(len(load)), -load))[:count]:
        e = int(e)
        primary = int(expert_rank[e])
        candidates = [r for r in range(ep) if r != primary]
        if not candidates:
            break
        candidates.sort(key=lambda r: (rank_node[r] == rank_node[primary], rank_load[r], r))
        r = candidates[0]
        out[e] = [r]
        rank_load[r] += load[e] / 2.0
        rank_load[primary] -= load[e] / 2.0
    return out


def build_placement(spec, num_experts: int, ep: int, num_gpus: int, gpu_node: np.ndarray,
                    demand: np.ndarray | None = None) -> Placement:
    """Placement for a PlacementSpec. ``demand`` [nodes, E] is required by locality_aware and replicate_hot."""
    if spec.kind == "explicit":
        ranks = np.asarray(spec.expert_ranks, dtype=np.int64)
    elif spec.kind == "round_robin":
        ranks = np.arange(num_experts) % ep
    elif spec.kind == "locality_aware":
        ranks = locality_aware(demand, ep, num_gpus, gpu_node)
    else:
        ranks = np.arange(num_experts) // (num_experts // ep)
    replicas = None
    if spec.replicate_hot:
        replicas = hot_replicas(ranks, demand.sum(axis=0), spec.replicate_hot, ep, gpu_node[:ep])
    return _build(ranks, ep, num_gpus, gpu_node, replicas, spec.replica_choice)


PLACEMENTS = {"contiguous": contiguous, "round_robin": round_robin}
NEEDS_DEMAND = ("locality_aware",)
