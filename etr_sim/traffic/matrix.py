"""Routing decision + placement -> bytes each GPU sends each GPU, and rows each GPU computes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from etr_sim.arrays import distinct
from etr_sim.routing.decision import RoutingDecision
from etr_sim.traffic.placement import Placement


@dataclass(frozen=True)
class TrafficMatrix:
    """bytes[src, dst]: bytes GPU src sends GPU dst in one phase; rows[src, dst]: token rows in it.

    The diagonal is local (no link crossed) and is kept for accounting only. Indices are
    stage-local; ``gpus[i]`` is the global GPU id of index i (identity when None).
    """

    phase: str
    bytes: np.ndarray  # [G, G] float64
    rows: np.ndarray  # [G, G] int64
    gpus: np.ndarray | None = None  # [G] global GPU ids

    def global_ids(self, local: np.ndarray) -> np.ndarray:
        return local if self.gpus is None else self.gpus[local]

    @property
    def total_bytes(self) -> float:
        return float(self.bytes.sum() - np.trace(self.bytes))

    def split_bytes(self, gpu_node: np.ndarray) -> tuple[float, float]:
        """(intra-node, inter-node) bytes that cross a link."""
        same = gpu_node[:, None] == gpu_node[None, :]
        off = ~np.eye(len(gpu_node), dtype=bool)
        return float(self.bytes[same & off].sum()), float(self.bytes[~same].sum())

    def transposed(self, phase: str, scale: float) -> "TrafficMatrix":
        """The reverse exchange (combine returns the rows dispatch sent), bytes scaled by ``scale``."""
        return TrafficMatrix(phase, self.bytes.T * scale, self.rows.T.copy(), self.gpus)


def dispatch_traffic(
    decision: RoutingDecision,
    src_gpu: np.ndarray,
    placement: Placement,
    row_bytes: float,
    dedup: str,
    gpus: np.ndarray | None = None,
) -> TrafficMatrix:
    """Dispatch all-to-all bytes.

    Variable-size (all-to-all-v): one row per kept assignment, or per distinct (token, GPU) when
    ``dedup == 'gpu'`` (a token for two experts on one GPU is sent once). Padded buffers with
    per-GPU capacity: every source sends every expert (its chosen instance) a full buffer of
    ``capacity`` rows, whatever it holds (GShard-style fixed-shape all-to-all); dedup cannot apply.
    """
    g = placement.num_gpus
    if decision.padded and decision.capacity is not None and decision.num_groups == g:
        src = np.repeat(np.arange(g), placement.num_experts)  # [G*E] every (source, expert) buffer
        dst = placement.gpu_of(src, np.tile(np.arange(placement.num_experts), g))
        rows = np.bincount(src * g + dst, minlength=g * g).reshape(g, g).astype(np.int64) * decision.capacity
        return TrafficMatrix("dispatch", rows * row_bytes, rows, gpus)
    src = src_gpu[decision.token]  # [A]
    dst = placement.gpu_of(src, decision.expert)  # [A]
    if dedup == "gpu":
        pair = distinct(decision.token * g + dst)
        src, dst = src_gpu[pair // g], pair % g
    rows = np.bincount(src * g + dst, minlength=g * g).reshape(g, g).astype(np.int64)
    return TrafficMatrix("dispatch", rows * row_bytes, rows, gpus)


def expert_rows(decision: RoutingDecision, src_gpu: np.ndarray, placement: Placement) -> np.ndarray:
    """[G, slots] GEMM rows each local expert instance computes (padded slots included).

    Padded: every (capacity group, expert) buffer holds ``capacity`` rows whatever it contains; with
    per-GPU groups each source's buffer lands on the instance that source uses.
    """
    g = placement.num_gpus
    slots = placement.slots_per_gpu
    slot = placement.slot
    if decision.padded and decision.capacity is not None:
        if decision.num_groups == g:
            src = np.repeat(np.arange(g), placement.num_experts)
            inst = placement.instance_of(src, np.tile(np.arange(placement.num_experts), g))
            dst = (src // placement.ep) * placement.ep + placement.instance_rank[inst]
            rows = np.bincount(dst * slots + slot[inst], minlength=g * slots).reshape(g, slots)
            return rows * decision.capacity
        # One capacity group per EP group: each primary instance holds ``capacity`` rows.
        dst = np.arange(g)
        rows = np.zeros((g, slots), dtype=np.int64)
        inst_on = placement.instance_rank
        for i in range(len(inst_on)):
            rows[dst % placement.ep == inst_on[i], slot[i]] = decision.capacity
        return rows
    src = src_gpu[decision.token]
    inst = placement.instance_of(src, decision.expert)  # [A]
    dst = (src // placement.ep) * placement.ep + placement.instance_rank[inst]
    return np.bincount(dst * slots + slot[inst], minlength=g * slots).reshape(g, slots)
