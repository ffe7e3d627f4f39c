"""Plans for the step model's dense collectives over groups of GPUs (all groups run concurrently).

- ``all_gather`` / ``reduce_scatter``: direct (every rank sends its 1/n shard to every other rank in
  one stage). On a switch or a full mesh this moves the bandwidth-optimal (n-1)/n of the data per
  rank and uses every link at once, as NCCL/HCCL mesh algorithms do.
- ``ring_all_reduce``: reduce-scatter then all-gather around a ring, 2(n-1) stages of M/n per rank
  (NCCL's ring), for data-parallel gradients that cross the scale-out network.
- ``p2p``: one flow per (src, dst) pair, for pipeline activations.
"""

from __future__ import annotations

import numpy as np

from etr_sim.topology.graph import Topology
from etr_sim.traffic.collectives import CollectivePlan, FlowSet, flowset


def _merge(topo: Topology, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> FlowSet:
    src = np.concatenate([p[0] for p in parts]).astype(np.int64)
    dst = np.concatenate([p[1] for p in parts]).astype(np.int64)
    size = np.concatenate([p[2] for p in parts]).astype(np.float64)
    return flowset(topo, src, dst, size)


def all_gather(name: str, groups: list[np.ndarray], total_bytes: float, topo: Topology) -> CollectivePlan:
    """Each group gathers ``total_bytes`` (the full output); every rank contributes 1/n of it."""
    parts = []
    for g in groups:
        n = len(g)
        if n < 2:
            continue
        src, dst = np.repeat(g, n), np.tile(g, n)
        off = src != dst
        parts.append((src[off], dst[off], np.full(off.sum(), total_bytes / n)))
    return CollectivePlan(name, (_merge(topo, parts),) if parts else ())


def reduce_scatter(name: str, groups: list[np.ndarray], total_bytes: float, topo: Topology) -> CollectivePlan:
    """Same traffic as all_gather: every rank sends each peer that peer's 1/n share."""
    return all_gather(name, groups, total_bytes, topo)


def ring_all_reduce(name: str, groups: list[np.ndarray], total_bytes: float, topo: Topology) -> CollectivePlan:
    """Ring all-reduce of ``total_bytes`` in every group: 2(n-1) stages, each rank -> next of M/n."""
    live = [g for g in groups if len(g) > 1]
    if not live or total_bytes <= 0:
        return CollectivePlan(name, ())
    n = len(live[0])
    parts = [(g, np.roll(g, -1), np.full(len(g), total_bytes / len(g))) for g in live]
    ring = _merge(topo, parts)
    return CollectivePlan(name, tuple(ring for _ in range(2 * (n - 1))))


def p2p(name: str, src: np.ndarray, dst: np.ndarray, bytes_each: float, topo: Topology) -> CollectivePlan:
    if bytes_each <= 0 or len(src) == 0:
        return CollectivePlan(name, ())
    return CollectivePlan(name, (flowset(topo, src, dst, np.full(len(src), bytes_each)),))


def scaled(plan: CollectivePlan, name: str, factor: float) -> CollectivePlan:
    """The same flows with every size multiplied by ``factor`` (e.g. chunks, another dtype)."""
    return CollectivePlan(
        name, tuple(FlowSet(s.src, s.dst, s.size_bytes * factor, s.offsets, s.links) for s in plan.stages)
    )
