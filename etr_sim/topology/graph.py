"""Topology spec -> directed networkx graph of GPUs, switches and NICs, with links as flat arrays.

Every physical link direction is one edge with an integer ``link_id``; the flow network works on
the arrays (``capacity_Bps[link_id]``, ``latency_s[link_id]``), the graph is for paths and display.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from etr_sim.config.topology import TopologySpec
from etr_sim.errors import TopologyError, problem
from etr_sim.units import GBps_to_Bps, gbps_to_Bps, us_to_s


@dataclass(frozen=True)
class Topology:
    """A built cluster. Shapes: ``[L]`` per link, ``[G]`` per GPU."""

    name: str
    graph: nx.DiGraph
    gpu_nodes: tuple[str, ...]  # [G] graph node of each GPU
    gpu_node_index: np.ndarray  # [G] int: which server each GPU sits in
    capacity_Bps: np.ndarray  # [L] effective bytes/s (raw bandwidth x efficiency)
    latency_s: np.ndarray  # [L]
    link_class: tuple[str, ...]  # [L] e.g. "scale_up", "pcie", "nic"
    link_ends: tuple[tuple[str, str], ...]  # [L] (u, v) graph nodes
    _path_cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_gpus(self) -> int:
        return len(self.gpu_nodes)

    @property
    def num_links(self) -> int:
        return len(self.capacity_Bps)

    def path(self, src: int, dst: int) -> tuple[int, ...]:
        """Link ids from GPU ``src`` to GPU ``dst`` (shortest in hops; ties broken by node order)."""
        key = (src, dst)
        hit = self._path_cache.get(key)
        if hit is None:
            nodes = nx.shortest_path(self.graph, self.gpu_nodes[src], self.gpu_nodes[dst])
            hit = tuple(self.graph.edges[u, v]["link_id"] for u, v in zip(nodes[:-1], nodes[1:]))
            self._path_cache[key] = hit
        return hit

    def paths(self, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Paths of many flows as CSR: (offsets [F+1], link ids [H]); flow f uses ids[offsets[f]:offsets[f+1]]."""
        per_flow = [self.path(int(s), int(d)) for s, d in zip(src, dst)]
        lengths = np.fromiter((len(p) for p in per_flow), dtype=np.int64, count=len(per_flow))
        offsets = np.zeros(len(per_flow) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter((i for p in per_flow for i in p), dtype=np.int64, count=int(offsets[-1]))
        return offsets, ids


class _Builder:
    def __init__(self) -> None:
        self.g = nx.DiGraph()
        self.cap: list[float] = []
        self.lat: list[float] = []
        self.cls: list[str] = []
        self.ends: list[tuple[str, str]] = []

    def duplex(self, a: str, b: str, cls: str, bandwidth_Bps: float, efficiency: float, latency_s: float) -> None:
        for u, v in ((a, b), (b, a)):
            self.g.add_edge(u, v, link_id=len(self.cap), cls=cls, raw_Bps=bandwidth_Bps)
            self.cap.append(bandwidth_Bps * efficiency)
            self.lat.append(latency_s)
            self.cls.append(cls)
            self.ends.append((u, v))


def build_topology(spec: TopologySpec, source: str = "<topology>") -> Topology:
    """Build the graph for ``spec``. Raises TopologyError if some GPU cannot reach another."""
    b = _Builder()
    node = spec.node
    gpus: list[str] = []
    server: list[int] = []
    fabric_switch = "fabric.switch"
    for n in range(spec.nodes):
        nvsw = f"node{n}.scale_up"
        for local in range(node.gpus):
            gi = len(gpus)
            gpu = f"gpu{gi}"
            gpus.append(gpu)
            server.append(n)
            b.g.add_node(gpu, kind="gpu", server=n)
            su = node.scale_up
            if node.gpus > 1:
                b.duplex(gpu, nvsw, "scale_up", GBps_to_Bps(su.bandwidth_GBps), su.efficiency, us_to_s(su.latency_us))
            nic = f"{gpu}.nic"
            b.duplex(gpu, nic, "pcie", GBps_to_Bps(node.pcie.bandwidth_GBps), node.pcie.efficiency,
                     us_to_s(node.pcie.latency_us))
            fab_lat = us_to_s(node.nic.latency_us + spec.fabric.switch_latency_us / 2.0)
            b.duplex(nic, fabric_switch, "nic", gbps_to_Bps(node.nic.bandwidth_gbps), node.nic.efficiency, fab_lat)
    topo = Topology(
        name=spec.name,
        graph=b.g,
        gpu_nodes=tuple(gpus),
        gpu_node_index=np.asarray(server, dtype=np.int64),
        capacity_Bps=np.asarray(b.cap, dtype=np.float64),
        latency_s=np.asarray(b.lat, dtype=np.float64),
        link_class=tuple(b.cls),
        link_ends=tuple(b.ends),
    )
    if not nx.is_strongly_connected(b.g):
        raise TopologyError(source, problem("fabric", "the graph is not connected: some GPU cannot reach another"))
    return topo
