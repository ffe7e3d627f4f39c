"""Collective algorithms: what each GPU sends -> a CollectivePlan (stages of flows with paths).

Plans are plain data computed outside SimPy, so they can be printed and unit-tested. The input of
an all-to-all algorithm is a ``Dispatch``: the [G, G] traffic matrix plus, when the routing decision
is known, the per-token destinations (token, source GPU, destination GPU), which token-level
algorithms such as DeepEP need to deduplicate per destination node. Algorithms
(docs/network.md, "Collective algorithms"):

- ``direct``: NCCL grouped send/recv, every (src, dst) pair at once, one stage.
- ``pairwise``: G-1 rounds, round r sends src -> (src + r) mod G; rounds one after another.
- ``pxn``: inter-node traffic is first carried over scale-up to the source-node GPU on the
  destination's rail, which sends it over the network (NCCL PXN). Proxy-pipelined: one stage.
- ``hierarchical``: Tutel 2DH. Stage 1 aggregates inside the node (src -> the local GPU on the
  destination's rail), stage 2 is one exchange between nodes among same-rail GPUs (the final
  scatter is a local re-layout in 2DH, no link crossed). Stages in sequence.
- ``deepep``: each token crosses the network once per destination node, to the GPU of the same
  rail there, then fans out over scale-up to its destination GPUs (DeepEP normal kernels).
  RDMA and NVLink legs are chunk-pipelined in DeepEP, so they run concurrently (one stage).

Step-model collectives (``allreduce_plan``): ring and tree all-reduce, ring all-gather and
reduce-scatter, each pipelined (chunks stream through the ring/tree), so one concurrent stage.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from etr_sim.arrays import distinct, distinct_inverse
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

    def link_bytes(self, num_links: int) -> np.ndarray:
        """[L] bytes each link carries over the whole plan."""
        out = np.zeros(num_links)
        for s in self.stages:
            hop_flow = np.repeat(np.arange(s.num_flows), np.diff(s.offsets))
            out += np.bincount(s.links, weights=s.size_bytes[hop_flow], minlength=num_links)
        return out


@dataclass(frozen=True)
class Dispatch:
    """Input of an all-to-all: the matrix and, optionally, per-(token, destination GPU) rows.

    token, src, dst: [R] one entry per distinct (token, destination GPU) the routing decision sends
    (None when only the matrix is known). ``reverse`` marks the combine direction (rows travel
    dst -> src). row_bytes: bytes of one row in this phase.
    """

    matrix: TrafficMatrix
    row_bytes: float
    token: np.ndarray | None = None
    src: np.ndarray | None = None
    dst: np.ndarray | None = None
    reverse: bool = False

    @property
    def phase(self) -> str:
        return self.matrix.phase

    def transposed(self, phase: str, scale: float) -> "Dispatch":
        """The reverse exchange with bytes scaled by ``scale`` (combine returns what dispatch sent)."""
        return replace(self, matrix=self.matrix.transposed(phase, scale), row_bytes=self.row_bytes * scale,
                       reverse=not self.reverse)


def dispatch_from_decision(matrix: TrafficMatrix, token: np.ndarray, src_gpu: np.ndarray, dst_gpu: np.ndarray,
                           row_bytes: float) -> Dispatch:
    """Dispatch with per-token rows: token [A], dst_gpu [A] per kept assignment; src_gpu [N] per token.

    GPU indices are the matrix's (stage-local); the Dispatch holds global GPU ids. (token, dst GPU)
    pairs are deduplicated (a token goes to a GPU once, whatever the expert count).
    """
    g = len(matrix.bytes)
    pair = distinct(np.asarray(token, dtype=np.int64) * g + np.asarray(dst_gpu, dtype=np.int64))  # [R]
    tok = pair // g
    return Dispatch(matrix, row_bytes, tok, matrix.global_ids(np.asarray(src_gpu)[tok]),
                    matrix.global_ids(pair % g))


def _as_dispatch(data: TrafficMatrix | Dispatch) -> Dispatch:
    if isinstance(data, Dispatch):
        return data
    return Dispatch(data, 0.0)


def flowset(topo: Topology, src: np.ndarray, dst: np.ndarray, size: np.ndarray) -> FlowSet:
    """Flows with paths (global GPU ids); zero-byte and self flows are dropped."""
    size = np.asarray(size, dtype=np.float64)
    keep = (size > 0) & (src != dst)
    src, dst, size = src[keep], dst[keep], size[keep]
    offsets, links = topo.paths(src, dst)
    return FlowSet(src, dst, size, offsets, links)


def _pairs(g: int, src: np.ndarray, dst: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum sizes per (src, dst) pair of global ids < g: returns src, dst, bytes of the non-empty pairs."""
    key, inv = distinct_inverse(src.astype(np.int64) * g + dst)
    tot = np.bincount(inv.reshape(-1), weights=size, minlength=len(key))
    nz = tot > 0
    return key[nz] // g, key[nz] % g, tot[nz]


def _pair_list(d: Dispatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-empty off-diagonal (src, dst, bytes) of the matrix, in global GPU ids."""
    b = d.matrix.bytes
    src, dst = np.nonzero(b > 0)
    off = src != dst
    src, dst = src[off], dst[off]
    return d.matrix.global_ids(src), d.matrix.global_ids(dst), b[src, dst]


def direct(data: TrafficMatrix | Dispatch, topo: Topology) -> CollectivePlan:
    """NCCL grouped send/recv: every off-diagonal non-empty (src, dst) pair is one flow, all at once."""
    d = _as_dispatch(data)
    return CollectivePlan(d.phase, (flowset(topo, *_pair_list(d)),))


def pairwise(data: TrafficMatrix | Dispatch, topo: Topology) -> CollectivePlan:
    """n-1 shifted rounds over the n GPUs of the exchange; round r: i sends to (i + r) mod n."""
    d = _as_dispatch(data)
    n = len(d.matrix.bytes)
    src = np.arange(n)
    stages = []
    for r in range(1, n):
        dst = (src + r) % n
        stages.append(flowset(topo, d.matrix.global_ids(src), d.matrix.global_ids(dst), d.matrix.bytes[src, dst]))
    return CollectivePlan(d.phase, tuple(stages))


def _rail_peer(topo: Topology, node: np.ndarray, local: np.ndarray) -> np.ndarray:
    return node * topo.gpus_per_node + local


def pxn(data: TrafficMatrix | Dispatch, topo: Topology) -> CollectivePlan:
    """NCCL PXN: s -> (node(s), local(d)) over scale-up, then -> d over the network on d's rail."""
    d = _as_dispatch(data)
    g, per = topo.num_gpus, topo.gpus_per_node
    src, dst, size = _pair_list(d)
    node = topo.gpu_node_index
    inter = node[src] != node[dst]
    relay = np.where(inter, _rail_peer(topo, node[src], dst % per), src)
    s1, d1, b1 = _pairs(g, src, relay, np.where(relay != src, size, 0.0))  # scale-up leg
    s2, d2, b2 = _pairs(g, relay, dst, size)  # network leg (and intra-node direct flows)
    ss, dd, bb = _pairs(g, np.r_[s1, s2], np.r_[d1, d2], np.r_[b1, b2])
    return CollectivePlan(d.phase, (flowset(topo, ss, dd, bb),))


def hierarchical(data: TrafficMatrix | Dispatch, topo: Topology) -> CollectivePlan:
    """Tutel 2DH: stage 1 aggregates inside the source node (s -> the local GPU on the destination's
    rail, plus all intra-node traffic), stage 2 is one exchange between nodes among same-rail GPUs.

    Unlike ``pxn`` the stages do not overlap: the inter-node exchange starts after the intra-node
    all-to-all (and its local re-layout, free here) has finished on every GPU.
    """
    d = _as_dispatch(data)
    g, per = topo.num_gpus, topo.gpus_per_node
    src, dst, size = _pair_list(d)
    node = topo.gpu_node_index
    inter = node[src] != node[dst]
    gw = np.where(inter, _rail_peer(topo, node[src], dst % per), dst)  # stage 1 target
    st1 = _pairs(g, src, gw, size)
    st2 = _pairs(g, gw[inter], dst[inter], size[inter])
    return CollectivePlan(d.phase, tuple(flowset(topo, *st) for st in (st1, st2)))


def deepep(data: TrafficMatrix | Dispatch, topo: Topology) -> CollectivePlan:
    """DeepEP normal kernels: one RDMA copy per (token, destination node), to the same-rail GPU there,
    then scale-up fan-out to each destination GPU; tokens for the own node go over scale-up directly.

    Needs per-token rows (``Dispatch.token``). The combine (``reverse``) runs the same flows backwards.
    """
    d = _as_dispatch(data)
    if d.token is None:
        raise ValueError("deepep needs per-token destinations: pass a Dispatch built by dispatch_from_decision")
    g, per = topo.num_gpus, topo.gpus_per_node
    node = topo.gpu_node_index
    src, dst, tok = d.src, d.dst, d.token
    inter = node[src] != node[dst]
    relay = np.where(inter, _rail_peer(topo, node[dst], src % per), src)  # [R]
    # RDMA leg: unique (token, destination node) with the node != the token's node
    key = distinct(tok[inter] * g + relay[inter])
    first = np.searchsorted(tok, key // g)  # tok is sorted: any row of the token gives its source
    rdma_src, rdma_dst = src[first], key % g
    s1, d1, b1 = _pairs(g, rdma_src, rdma_dst, np.full(len(key), d.row_bytes))
    s2, d2, b2 = _pairs(g, relay, dst, np.full(len(dst), d.row_bytes))  # fan-out (relay == src locally)
    ss, dd, bb = _pairs(g, np.r_[s1, s2], np.r_[d1, d2], np.r_[b1, b2])
    if d.reverse:
        ss, dd = dd, ss
    return CollectivePlan(d.phase, (flowset(topo, ss, dd, bb),))


# One entry per YAML ``collective.algorithm``.
ALGORITHMS = {"direct": direct, "pairwise": pairwise, "pxn": pxn, "hierarchical": hierarchical, "deepep": deepep}


def plan_collective(algorithm: str, data: TrafficMatrix | Dispatch, topo: Topology) -> CollectivePlan:
    """Plan an all-to-all with ``ALGORITHMS[algorithm]``; ``data`` is a TrafficMatrix or a Dispatch."""
    return ALGORITHMS[algorithm](data, topo)


def allreduce_plan(kind: str, size_bytes: float, topo: Topology, gpus: np.ndarray | None = None) -> CollectivePlan:
    """Pipelined step-model collectives over ``gpus`` (default all) in index order.

    kind: ``ring_allreduce`` (each GPU sends 2(n-1)/n x size to its successor), ``tree_allreduce``
    (binary tree, every edge carries size up (reduce) then down (broadcast); two stages),
    ``allgather`` / ``reduce_scatter`` (ring, (n-1)/n x size each; size = the full gathered buffer).
    """
    gpus = np.arange(topo.num_gpus) if gpus is None else np.asarray(gpus, dtype=np.int64)
    n = len(gpus)
    if n < 2:
        return CollectivePlan(kind, ())
    nxt = np.roll(gpus, -1)
    if kind == "ring_allreduce":
        return CollectivePlan(kind, (flowset(topo, gpus, nxt, np.full(n, 2.0 * (n - 1) / n * size_bytes)),))
    if kind in ("allgather", "reduce_scatter"):
        return CollectivePlan(kind, (flowset(topo, gpus, nxt, np.full(n, (n - 1) / n * size_bytes)),))
    if kind == "tree_allreduce":
        child = np.arange(1, n)
        parent = (child - 1) // 2
        up = flowset(topo, gpus[child], gpus[parent], np.full(n - 1, float(size_bytes)))
        down = flowset(topo, gpus[parent], gpus[child], np.full(n - 1, float(size_bytes)))
        return CollectivePlan(kind, (up, down))
    raise ValueError(f"unknown collective {kind!r}; known: ring_allreduce, tree_allreduce, allgather, reduce_scatter")
