"""The step model's dense collectives over many groups of GPUs at once (all groups concurrently).

- ``all_gather`` / ``reduce_scatter`` with algorithm ``direct``: every rank sends its 1/n share to every
  peer in one stage (NCCL/HCCL mesh algorithms on a switch or full mesh; (n-1)/n of the data per rank,
  every link used at once). With ``ring`` they use collectives.allreduce_plan's pipelined ring.
- ``over_groups``: any collectives.allreduce_plan kind (ring or tree all-reduce, ...) run in every group.
- ``p2p``: one flow per (src, dst) pair, for pipeline activations.
"""

from __future__ import annotations

import numpy as np

from etr_sim.topology.graph import Topology
from etr_sim.traffic.collectives import CollectivePlan, FlowSet, allreduce_plan, flowset


def _concat(sets: list[FlowSet]) -> FlowSet:
    """Flow sets that start together, as one (paths stay per flow)."""
    offsets = [sets[0].offsets]
    base = sets[0].offsets[-1]
    for fs in sets[1:]:
        offsets.append(fs.offsets[1:] + base)
        base += fs.offsets[-1]
    cat = lambda name: np.concatenate([getattr(fs, name) for fs in sets])  # noqa: E731
    return FlowSet(cat("src"), cat("dst"), cat("size_bytes"), np.concatenate(offsets), cat("links"))


def over_groups(kind: str, name: str, groups: list[np.ndarray], size_bytes: float, topo: Topology) -> CollectivePlan:
    """``allreduce_plan(kind)`` in every group, stage i of all groups starting together."""
    plans = [allreduce_plan(kind, size_bytes, topo, g) for g in groups if len(g) > 1 and size_bytes > 0]
    if not plans:
        return CollectivePlan(name, ())
    n_stages = max(len(p.stages) for p in plans)
    stages = tuple(_concat([p.stages[i] for p in plans if i < len(p.stages)]) for i in range(n_stages))
    return CollectivePlan(name, stages)


def all_gather(name: str, groups: list[np.ndarray], total_bytes: float, topo: Topology,
               algorithm: str = "direct") -> CollectivePlan:
    """Each group gathers ``total_bytes`` (the full output); every rank contributes 1/n of it.

    A reduce-scatter of the same buffer moves the same bytes the same way, so it uses this too."""
    if algorithm == "ring":
        return over_groups("allgather", name, groups, total_bytes, topo)
    src, dst, size = [], [], []
    for g in groups:
        n = len(g)
        if n < 2:
            continue
        s, d = np.repeat(g, n), np.tile(g, n)
        off = s != d
        src.append(s[off])
        dst.append(d[off])
        size.append(np.full(off.sum(), total_bytes / n))
    if not src:
        return CollectivePlan(name, ())
    return CollectivePlan(name, (flowset(topo, np.concatenate(src), np.concatenate(dst), np.concatenate(size)),))


def p2p(name: str, src: np.ndarray, dst: np.ndarray, bytes_each: float, topo: Topology) -> CollectivePlan:
    if bytes_each <= 0 or len(src) == 0:
        return CollectivePlan(name, ())
    return CollectivePlan(name, (flowset(topo, src, dst, np.full(len(src), bytes_each)),))


def scaled(plan: CollectivePlan, name: str, factor: float) -> CollectivePlan:
    """The same flows with every size multiplied by ``factor`` (e.g. chunks, another dtype)."""
    return CollectivePlan(
        name, tuple(FlowSet(s.src, s.dst, s.size_bytes * factor, s.offsets, s.links) for s in plan.stages)
    )
