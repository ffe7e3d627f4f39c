"""Collective algorithms: a traffic matrix -> a CollectivePlan (stages of flows with paths).

Plans are plain data computed outside SimPy, so they can be printed and unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from etr_sim.topology.graph import Topology
from etr_sim.traffic.matrix import TrafficMatrix


@dataclass(frozen=True)
class FlowSet:
    """Flows that start together. [F] src, dst, size_bytes; paths as CSR offsets [F+1], links [H]."""

    src: np.ndarray
    dst: np.ndarray
    size_bytes: np.ndarray
    offsets: np.ndarray
    links: np.ndarray

    @property
    def num_flows(self) -> int:
        return len(self.src)


@dataclass(frozen=True)
class CollectivePlan:
    """Stages run one after another; the flows of one stage run concurrently."""

    name: str
    stages: tuple[FlowSet, ...]

    @property
    def num_flows(self) -> int:
        return sum(s.num_flows for s in self.stages)

    @property
    def total_bytes(self) -> float:
        return float(sum(s.size_bytes.sum() for s in self.stages))


def flowset(topo: Topology, src: np.ndarray, dst: np.ndarray, size: np.ndarray) -> FlowSet:
    offsets, links = topo.paths(src, dst)
    return FlowSet(src, dst, size.astype(np.float64), offsets, links)


def direct(matrix: TrafficMatrix, topo: Topology) -> CollectivePlan:
    """NCCL grouped send/recv: every off-diagonal non-empty (src, dst) pair is one flow, all at once."""
    b = matrix.bytes.copy()
    np.fill_diagonal(b, 0.0)
    src, dst = np.nonzero(b > 0)
    size = b[src, dst]
    return CollectivePlan(matrix.phase, (flowset(topo, matrix.global_ids(src), matrix.global_ids(dst), size),))


# One entry per YAML ``collective.algorithm``.
ALGORITHMS = {"direct": direct}


def plan_collective(algorithm: str, matrix: TrafficMatrix, topo: Topology) -> CollectivePlan:
    return ALGORITHMS[algorithm](matrix, topo)
