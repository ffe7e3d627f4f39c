"""Topology spec -> directed graph of GPUs, switches and NICs, links as flat arrays, structured paths.

Every physical link direction is one edge with an integer ``link_id``; the flow network works on the
arrays (``capacity_Bps[link_id]``, ``latency_s[link_id]``), the networkx graph is for display and
connectivity. Paths are not searched per pair: the builder knows the structure, keeps index arrays
(which link leaves GPU g, which leaf NIC i sits on, ...) and ``paths`` assembles the links of
millions of flows with a few vectorised lookups. Routing rules (docs/topology.md):

- same scale-up domain: over scale-up (switch: GPU->switch->GPU; full mesh: the pair's own link;
  groups: the pair's link inside a group, GPU->PCIe->GPU across groups);
- otherwise over the network: GPU -> PCIe -> NIC -> fabric -> NIC -> PCIe -> GPU. On multi-plane
  fabrics (and rail-optimized ones with ``routing: rail_aligned``) traffic for another rail/plane is
  first forwarded over scale-up to the source-node GPU whose NIC is on the destination's rail;
- fabric: leaf, or leaf -> spine trunk -> leaf (ECMP ``split``: the trunk is all uplinks of the
  leaf; ``hash``: one spine per flow from a seeded hash of (src, dst)), or leaf -> pod -> core ->
  pod -> leaf on three tiers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from etr_sim.config.topology import (
    FatTreeFabric,
    MultiPlaneFabric,
    RailOptimizedFabric,
    ScaleUpFullMesh,
    ScaleUpGroups,
    ScaleUpNone,
    ScaleUpSwitch,
    SingleSwitchFabric,
    TopologySpec,
    check_size,
)
from etr_sim.arrays import mix64
from etr_sim.errors import TopologyError, problem
from etr_sim.units import GBps_to_Bps, gbps_to_Bps, us_to_s

NONE = -1  # "no link" in the route index arrays


@dataclass(frozen=True)
class Routes:
    """Index arrays the path assembler looks links up in (NONE where a link does not exist).

    Shapes: [G] per GPU, [I] per NIC, [V] per leaf, [P] per pod, [V, S] per (leaf, spine).
    """

    domain: np.ndarray  # [G] scale-up domain of each GPU (node index unless a switch spans nodes)
    local: np.ndarray  # [G] index of the GPU inside its node
    su_up: np.ndarray  # [G] GPU -> scale-up switch
    su_down: np.ndarray  # [G]
    mesh: np.ndarray  # [nodes, gpus, gpus] direct scale-up link a -> b (full mesh / groups)
    group: np.ndarray  # [G] scale-up group (groups kind), else 0
    p2p_up: np.ndarray  # [G] GPU -> node PCIe root (groups kind)
    p2p_down: np.ndarray  # [G]
    nic: np.ndarray  # [G] NIC of each GPU
    pcie_up: np.ndarray  # [G] GPU -> NIC (or GPU -> PCIe switch when GPUs share a NIC)
    pcie_down: np.ndarray  # [G]
    nicpcie_up: np.ndarray  # [I] PCIe switch -> NIC (shared NICs only)
    nicpcie_down: np.ndarray  # [I]
    nic_up: np.ndarray  # [I] NIC -> leaf
    nic_down: np.ndarray  # [I]
    leaf: np.ndarray  # [I] leaf switch of each NIC
    plane: np.ndarray  # [V] plane of each leaf (multi-plane; else 0)
    leaf_up: np.ndarray  # [V] leaf -> spine trunk (split) ; NONE for hash
    leaf_down: np.ndarray  # [V]
    spine_up: np.ndarray  # [V, S] leaf -> spine s (hash ECMP)
    spine_down: np.ndarray  # [V, S]
    pod: np.ndarray  # [V] pod of each leaf (three tiers)
    pod_up: np.ndarray  # [P] pod -> core trunk
    pod_down: np.ndarray  # [P]
    rail_aligned: bool
    ecmp_seed: int


@dataclass(frozen=True)
class Topology:
    """A built cluster. Shapes: ``[L]`` per link, ``[G]`` per GPU."""

    name: str
    graph: nx.DiGraph
    gpu_nodes: tuple[str, ...]  # [G] graph node of each GPU
    gpu_node_index: np.ndarray  # [G] int: which server each GPU sits in
    capacity_Bps: np.ndarray  # [L] effective bytes/s (raw bandwidth x efficiency)
    latency_s: np.ndarray  # [L]
    link_class: tuple[str, ...]  # [L] "scale_up", "pcie", "nic", "fabric", ...
    link_ends: tuple[tuple[str, str], ...]  # [L] (u, v) graph nodes
    raw_Bps: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [L] signalling rate
    routes: Routes | None = None
    spec: TopologySpec | None = None
    source: str = "<topology>"
    message_overhead_s: float = 0.0

    @property
    def num_gpus(self) -> int:
        return len(self.gpu_nodes)

    @property
    def num_links(self) -> int:
        return len(self.capacity_Bps)

    @property
    def gpus_per_node(self) -> int:
        return int(np.bincount(self.gpu_node_index).max())

    def path(self, src: int, dst: int) -> tuple[int, ...]:
        """Link ids from GPU ``src`` to GPU ``dst``."""
        offsets, ids = self.paths(np.array([src]), np.array([dst]))
        return tuple(int(i) for i in ids)

    def paths(self, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Paths of many flows as CSR: (offsets [F+1], link ids [H]); flow f uses ids[offsets[f]:offsets[f+1]].

        Raises TopologyError if some pair has no route (e.g. two planes with no scale-up between).
        """
        assert self.routes is not None
        src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
        lengths, ids = [], []
        for lo in range(0, max(len(src), 1), _CHUNK):  # bounded memory: [chunk, K] at a time
            m = _assemble(self.routes, src[lo:lo + _CHUNK], dst[lo:lo + _CHUNK])  # [F_chunk, K]
            if (m == _UNREACHABLE).any():
                f = lo + int(np.flatnonzero((m == _UNREACHABLE).any(axis=1))[0])
                raise TopologyError(self.source, problem(
                    "fabric", f"GPU {int(src[f])} has no path to GPU {int(dst[f])} (disconnected planes or nodes)",
                    self.spec.fabric.kind if self.spec else None))
            mask = m >= 0
            lengths.append(mask.sum(axis=1))
            ids.append(m[mask])
        offsets = np.zeros(len(src) + 1, dtype=np.int64)
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
        return offsets, np.concatenate(ids)

    def link_classes(self) -> list[str]:
        return list(dict.fromkeys(self.link_class))


_UNREACHABLE = -2
_CHUNK = 1 << 20  # flows per path-assembly chunk


def _ecmp_hash(src: np.ndarray, dst: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic per-flow hash (splitmix64 of src, dst, seed); no Python hash()."""
    x = (src.astype(np.uint64) << np.uint64(32)) ^ dst.astype(np.uint64) ^ np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
    return mix64(x)


def _intra(r: Routes, s: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale-up (or PCIe) links from s to d inside one domain: (first [F], second [F]); NONE if absent,
    _UNREACHABLE where no scale-up route exists (caller then uses the network)."""
    a1 = np.full(len(s), _UNREACHABLE, dtype=np.int64)
    a2 = np.full(len(s), NONE, dtype=np.int64)
    if len(s) == 0:
        return a1, a2
    if r.su_up[0] != NONE:  # switch
        a1, a2 = r.su_up[s], r.su_down[d]
    elif r.mesh.size and r.mesh.max() >= 0:  # full mesh or groups
        node = s // r.mesh.shape[1]
        a1 = r.mesh[node, r.local[s], r.local[d]]
        cross = a1 == NONE
        a1 = np.where(cross, r.p2p_up[s], a1)
        a2 = np.where(cross, r.p2p_down[d], NONE)
    else:  # no scale-up: GPUs behind one PCIe switch talk through it
        same_sw = r.nic[s] == r.nic[d]
        a1 = np.where(same_sw & (r.nicpcie_up[r.nic[s]] != NONE), r.pcie_up[s], _UNREACHABLE)
        a2 = np.where(a1 >= 0, r.pcie_down[d], NONE)
    a1 = np.where(s == d, NONE, a1)
    a2 = np.where(s == d, NONE, a2)
    return a1, a2


def _assemble(r: Routes, s: np.ndarray, d: np.ndarray) -> np.ndarray:
    """[F, K] link ids per flow in path order, NONE padding, _UNREACHABLE where no route exists."""
    f = len(s)
    k = 14
    m = np.full((f, k), NONE, dtype=np.int64)
    if f == 0:
        return m
    same_dom = r.domain[s] == r.domain[d]
    i1, i2 = _intra(r, s, d)
    local = same_dom & (i1 != _UNREACHABLE)
    m[local, 0], m[local, 1] = i1[local], i2[local]
    net = ~local & (s != d)
    if not net.any():
        return m
    s, d = s[net], d[net]
    nic_d = r.nic[d]
    egress = s.copy()
    if r.rail_aligned:
        # forward to the source-node GPU that owns the NIC on the destination's plane/rail
        gpn = np.bincount(r.nic, minlength=1)
        per_node = r.mesh.shape[1]
        nics_per_node = per_node // int(gpn[0])
        want_local = (nic_d % nics_per_node) * int(gpn[0])
        egress = (s // per_node) * per_node + want_local
        fwd = (egress != s) & (r.nic[egress] != r.nic[s])
        egress = np.where(fwd, egress, s)
        if fwd.any():
            e1, e2 = _intra(r, s[fwd], egress[fwd])
            sub = m[net]
            sub[fwd, 0], sub[fwd, 1] = e1, e2
            m[net] = sub
    nic_e = r.nic[egress]
    cols = np.full((len(s), k - 2), NONE, dtype=np.int64)
    same_nic = nic_e == nic_d  # PCIe-only: GPUs sharing a NIC but routed over the network: turn around at NIC
    cols[:, 0] = r.pcie_up[egress]
    cols[:, 1] = r.nicpcie_up[nic_e]
    cols[:, 2] = np.where(same_nic, NONE, r.nic_up[nic_e])
    le, ld = r.leaf[nic_e], r.leaf[nic_d]
    cross = (le != ld) & ~same_nic
    if cross.any():
        if (r.plane[le[cross]] != r.plane[ld[cross]]).any():
            cols[cross & (r.plane[le] != r.plane[ld]), 3] = _UNREACHABLE
        if r.leaf_up[0] != NONE:
            same_pod = r.pod[le] == r.pod[ld]
            two = cross & (same_pod | (r.pod_up.size == 0))
            cols[two, 3] = np.where(cols[two, 3] == _UNREACHABLE, _UNREACHABLE, r.leaf_up[le[two]])
            cols[two, 4] = r.leaf_down[ld[two]]
            three = cross & ~two
            if three.any():
                cols[three, 3] = r.leaf_up[le[three]]
                cols[three, 4] = r.pod_up[r.pod[le[three]]]
                cols[three, 5] = r.pod_down[r.pod[ld[three]]]
                cols[three, 6] = r.leaf_down[ld[three]]
        else:
            spine = (_ecmp_hash(s[cross], d[cross], r.ecmp_seed) % np.uint64(r.spine_up.shape[1])).astype(np.int64)
            keep = cols[cross, 3] != _UNREACHABLE
            cols[cross, 3] = np.where(keep, r.spine_up[le[cross], spine], _UNREACHABLE)
            cols[cross, 4] = r.spine_down[ld[cross], spine]
    cols[:, 7] = np.where(same_nic, NONE, r.nic_down[nic_d])
    cols[:, 8] = r.nicpcie_down[nic_d]
    cols[:, 9] = r.pcie_down[d]
    m[net, 2:] = cols
    return m


class _Builder:
    def __init__(self) -> None:
        self.g = nx.DiGraph()
        self.cap: list[float] = []
        self.raw: list[float] = []
        self.lat: list[float] = []
        self.cls: list[str] = []
        self.ends: list[tuple[str, str]] = []

    def duplex(self, a: str, b: str, cls: str, bandwidth_Bps: float, efficiency: float,
               latency_s: float) -> tuple[int, int]:
        """Add both directions; returns (a->b id, b->a id)."""
        ids = []
        for u, v in ((a, b), (b, a)):
            ids.append(len(self.cap))
            self.g.add_edge(u, v, link_id=len(self.cap), cls=cls, raw_Bps=bandwidth_Bps)
            self.cap.append(bandwidth_Bps * efficiency)
            self.raw.append(bandwidth_Bps)
            self.lat.append(latency_s)
            self.cls.append(cls)
            self.ends.append((u, v))
        return ids[0], ids[1]


def _full(n: int | tuple, fill: int = NONE) -> np.ndarray:
    return np.full(n, fill, dtype=np.int64)


def build_topology(spec: TopologySpec, source: str = "<topology>") -> Topology:
    """Build the graph, link arrays and route tables for ``spec``.

    Raises TopologyError (file, YAML path, value) if some GPU cannot reach another, or if the
    cluster is beyond what the builder handles (``check_size``), before allocating anything.
    """
    check_size(spec, source)  # also run by config.load_topology; specs built in code pass here
    b = _Builder()
    nd, su, fab = spec.node, spec.node.scale_up, spec.fabric
    n_nodes, per = spec.nodes, nd.gpus
    g_total = n_nodes * per
    gpn = nd.nic.gpus_per_nic
    nics_per_node = per // gpn
    n_nics = n_nodes * nics_per_node
    gpus = [f"gpu{g}" for g in range(g_total)]
    server = np.repeat(np.arange(n_nodes), per)
    local = np.tile(np.arange(per), n_nodes)
    for g in range(g_total):
        b.g.add_node(gpus[g], kind="gpu", server=int(server[g]))

    # -- scale-up ------------------------------------------------------------------------------
    domain = server.copy()
    su_up, su_down = _full(g_total), _full(g_total)
    mesh = _full((n_nodes, per, per))
    group = np.zeros(g_total, dtype=np.int64)
    p2p_up, p2p_down = _full(g_total), _full(g_total)
    pcie_bw, pcie_eff, pcie_lat = GBps_to_Bps(nd.pcie.bandwidth_GBps), nd.pcie.efficiency, us_to_s(nd.pcie.latency_us)
    if isinstance(su, ScaleUpSwitch):
        dom_size = su.domain_gpus or per
        domain = np.arange(g_total) // dom_size
        if dom_size > 1:
            for g in range(g_total):
                su_up[g], su_down[g] = b.duplex(gpus[g], f"domain{domain[g]}.nvswitch", "scale_up",
                                                GBps_to_Bps(su.bandwidth_GBps), su.efficiency, us_to_s(su.latency_us))
    elif isinstance(su, (ScaleUpFullMesh, ScaleUpGroups)):
        size = su.group_size if isinstance(su, ScaleUpGroups) else per
        group = local // size
        for n in range(n_nodes):
            for a in range(per):
                for c in range(a + 1, per):
                    if a // size == c // size:
                        mesh[n, a, c], mesh[n, c, a] = b.duplex(
                            gpus[n * per + a], gpus[n * per + c], "scale_up", GBps_to_Bps(su.peer_bandwidth_GBps),
                            su.efficiency, us_to_s(su.latency_us))
            if size < per:
                for a in range(per):
                    g = n * per + a
                    p2p_up[g], p2p_down[g] = b.duplex(gpus[g], f"node{n}.pcie_root", "pcie_p2p", pcie_bw, pcie_eff,
                                                      pcie_lat)
    # ScaleUpNone: nothing

    # -- PCIe and NICs ---------------------------------------------------------------------------
    nic = server * nics_per_node + local // gpn
    pcie_up, pcie_down = _full(g_total), _full(g_total)
    nicpcie_up, nicpcie_down = _full(n_nics), _full(n_nics)
    nic_names = [f"nic{i}" for i in range(n_nics)]
    for g in range(g_total):
        hub = nic_names[nic[g]] if gpn == 1 else f"{nic_names[nic[g]]}.pcie_switch"
        pcie_up[g], pcie_down[g] = b.duplex(gpus[g], hub, "pcie", pcie_bw, pcie_eff, pcie_lat)
    if gpn > 1:
        for i in range(n_nics):
            nicpcie_up[i], nicpcie_down[i] = b.duplex(f"{nic_names[i]}.pcie_switch", nic_names[i], "pcie",
                                                      pcie_bw, pcie_eff, pcie_lat)

    # -- fabric ----------------------------------------------------------------------------------
    nic_bw, nic_eff = gbps_to_Bps(nd.nic.bandwidth_gbps), nd.nic.efficiency
    sw = us_to_s(fab.switch_latency_us)
    nic_rail = np.arange(n_nics) % nics_per_node  # [I] NIC index inside its node = rail / plane
    nic_node = np.arange(n_nics) // nics_per_node
    rail_aligned = False
    if isinstance(fab, SingleSwitchFabric):
        leaf = np.zeros(n_nics, dtype=np.int64)
        ports, oversub, ecmp, spines, seed, tiers = n_nics, 1.0, "split", 1, 0, 2
    elif isinstance(fab, FatTreeFabric):
        leaf = np.arange(n_nics) // fab.nics_per_leaf
        ports, oversub, ecmp, spines, seed, tiers = fab.nics_per_leaf, fab.oversubscription, fab.ecmp, fab.spines, \
            fab.ecmp_seed, fab.tiers
        if ecmp == "hash" and tiers == 3:
            raise TopologyError(source, problem("fabric.ecmp", "hash ECMP is modelled for two tiers only", ecmp))
    elif isinstance(fab, RailOptimizedFabric):
        su_index = nic_node // fab.nodes_per_leaf
        leaf = su_index * nics_per_node + nic_rail
        ports, oversub, ecmp, spines, seed, tiers = fab.nodes_per_leaf, fab.oversubscription, fab.ecmp, fab.spines, \
            fab.ecmp_seed, 2
        rail_aligned = fab.routing == "rail_aligned"
    elif isinstance(fab, MultiPlaneFabric):
        leaves_per_plane = -(-n_nodes // fab.nics_per_leaf)
        leaf = nic_rail * leaves_per_plane + nic_node // fab.nics_per_leaf
        ports, oversub, ecmp, spines, seed, tiers = fab.nics_per_leaf, fab.oversubscription, "split", 1, 0, 2
        rail_aligned = True
    else:  # pragma: no cover - pydantic restricts kinds
        raise TopologyError(source, problem("fabric.kind", "unknown fabric", getattr(fab, "kind", None)))
    n_leaves = int(leaf.max()) + 1
    plane = np.zeros(n_leaves, dtype=np.int64)
    if isinstance(fab, MultiPlaneFabric):
        plane = np.arange(n_leaves) // (-(-n_nodes // fab.nics_per_leaf))
    nic_up, nic_down = _full(n_nics), _full(n_nics)
    for i in range(n_nics):
        nic_up[i], nic_down[i] = b.duplex(nic_names[i], f"leaf{leaf[i]}", "nic", nic_bw, nic_eff,
                                          us_to_s(nd.nic.latency_us) + sw / 2)
    leaf_up, leaf_down = _full(n_leaves), _full(n_leaves)
    spine_up, spine_down = _full((n_leaves, 0)), _full((n_leaves, 0))
    pod = np.zeros(n_leaves, dtype=np.int64)
    pod_up, pod_down = _full(0), _full(0)
    trunk_Bps = ports * nic_bw / oversub
    if n_leaves > 1:
        plane_name = [f"plane{p}." if isinstance(fab, MultiPlaneFabric) else "" for p in plane]
        if ecmp == "split":
            if tiers == 3:
                assert isinstance(fab, FatTreeFabric)
                pod = np.arange(n_leaves) // fab.leaves_per_pod
            for v in range(n_leaves):
                top = f"{plane_name[v]}pod{pod[v]}.agg" if tiers == 3 else f"{plane_name[v]}spines"
                leaf_up[v], leaf_down[v] = b.duplex(f"leaf{v}", top, "fabric", trunk_Bps, nic_eff, sw)
            if tiers == 3 and pod.max() > 0:
                assert isinstance(fab, FatTreeFabric)
                n_pods = int(pod.max()) + 1
                pod_up, pod_down = _full(n_pods), _full(n_pods)
                pod_Bps = fab.leaves_per_pod * trunk_Bps / fab.pod_oversubscription
                for p in range(n_pods):
                    pod_up[p], pod_down[p] = b.duplex(f"pod{p}.agg", "core", "fabric_core", pod_Bps, nic_eff, sw)
        else:
            spine_up, spine_down = _full((n_leaves, spines)), _full((n_leaves, spines))
            for v in range(n_leaves):
                for s_ in range(spines):
                    spine_up[v, s_], spine_down[v, s_] = b.duplex(f"leaf{v}", f"spine{s_}", "fabric",
                                                                  trunk_Bps / spines, nic_eff, sw)
    routes = Routes(domain, local, su_up, su_down, mesh, group, p2p_up, p2p_down, nic, pcie_up, pcie_down,
                    nicpcie_up, nicpcie_down, nic_up, nic_down, leaf, plane, leaf_up, leaf_down, spine_up,
                    spine_down, pod, pod_up, pod_down, rail_aligned, seed)
    topo = Topology(
        name=spec.name,
        graph=b.g,
        gpu_nodes=tuple(gpus),
        gpu_node_index=server.astype(np.int64),
        capacity_Bps=np.asarray(b.cap, dtype=np.float64),
        latency_s=np.asarray(b.lat, dtype=np.float64),
        link_class=tuple(b.cls),
        link_ends=tuple(b.ends),
        raw_Bps=np.asarray(b.raw, dtype=np.float64),
        routes=routes,
        spec=spec,
        source=source,
        message_overhead_s=us_to_s(spec.message_overhead_us),
    )
    _check_reachable(topo, per)
    return topo


def _check_reachable(topo: Topology, per: int) -> None:
    """Every GPU of the first node (and, by symmetry of the templates, every GPU) reaches every GPU."""
    g = topo.num_gpus
    first = np.arange(min(per, g))
    src = np.repeat(first, g)
    dst = np.tile(np.arange(g), len(first))
    topo.paths(src, dst)  # raises TopologyError naming the first unreachable pair
    if not nx.is_strongly_connected(topo.graph):
        raise TopologyError(topo.source, problem("fabric", "the graph is not connected: some GPU cannot reach another"))
