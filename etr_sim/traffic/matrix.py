"""Routing decision + placement -> bytes each GPU sends each GPU, and rows each GPU computes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    per-GPU capacity: every source sends every expert a full buffer of ``capacity`` rows, whatever
    it holds (GShard-style fixed-shape all-to-all); dedup cannot apply to fixed buffers.
    """
    g = placement.num_gpus
    if decision.padded and decision.capacity is not None and decision.num_groups == g:
        per_dst = placement.experts_per_gpu() * decision.capacity  # [G] rows into each GPU
        same_group = (np.arange(g)[:, None] // placement.ep) == (np.arange(g)[None, :] // placement.ep)
        rows = np.where(same_group, per_dst[None, :], 0).astype(np.int64)
        return TrafficMatrix("dispatch", rows * row_bytes, rows, gpus)
    src = src_gpu[decision.token]  # [A]
    dst = placement.gpu_of(src, decision.expert)  # [A]
    if dedup == "gpu":
        pair = np.unique(decision.token * g + dst)
        src, dst = src_gpu[pair // g], pair % g
    rows = np.bincount(src * g + dst, minlength=g * g).reshape(g, g).astype(np.int64)
    return TrafficMatrix("dispatch", rows * row_bytes, rows, gpus)


def expert_rows(decision: RoutingDecision, src_gpu: np.ndarray, placement: Placement) -> np.ndarray:
    """[G, experts per GPU] GEMM rows each local expert computes (padded slots included).

    Padded: every (capacity group, expert) buffer holds ``capacity`` rows whatever it contains.
    """
    g, n_exp = placement.num_gpus, placement.num_experts
    per_gpu = n_exp // placement.ep
    dst = placement.gpu_of(src_gpu[decision.token], decision.expert)  # [A]
    local = placement.expert_slot[decision.expert]  # [A] slot on the destination GPU
    rows = np.bincount(dst * per_gpu + local, minlength=g * per_gpu).reshape(g, per_gpu)
    if decision.padded and decision.capacity is not None:
        groups_per_ep = max(decision.num_groups // (g // placement.ep), 1)
        rows = np.full((g, per_gpu), decision.capacity * groups_per_ep, dtype=np.int64)
    return rows
