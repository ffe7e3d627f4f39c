"""Summary numbers of a built topology, for ``etr-sim topo show`` and reports (no printing here)."""

from __future__ import annotations

import numpy as np

from etr_sim.config.topology import (
    RailOptimizedFabric,
    ScaleUpFullMesh,
    ScaleUpGroups,
    ScaleUpSwitch,
)
from etr_sim.topology.graph import Topology
from etr_sim.units import GBps_to_Bps, gbps_to_Bps


def describe(topo: Topology) -> dict:
    """GPUs, nodes, links by class, per-GPU scale-up / scale-out bandwidth and bisection (bytes/s).

    Per-GPU figures are signalling rates (``_raw``) and effective ones (x efficiency). Bisection is the
    scale-out capacity between two halves of the nodes: min(half the NIC injection, half the leaf
    uplink capacity) when traffic between halves must climb above the leaves, else half the injection
    (one switch, or one rail-optimized scalable unit where same-rail traffic stays on its leaf).
    """
    spec = topo.spec
    assert spec is not None
    nd = spec.node
    su = nd.scale_up
    if isinstance(su, ScaleUpSwitch):
        up = GBps_to_Bps(su.bandwidth_GBps) if (su.domain_gpus or nd.gpus) > 1 else 0.0
    elif isinstance(su, ScaleUpFullMesh):
        up = GBps_to_Bps(su.peer_bandwidth_GBps) * (nd.gpus - 1)
    elif isinstance(su, ScaleUpGroups):
        up = GBps_to_Bps(su.peer_bandwidth_GBps) * (su.group_size - 1)
    else:
        up = 0.0
    eff_up = up * getattr(su, "efficiency", 1.0)
    nic = gbps_to_Bps(nd.nic.bandwidth_gbps)
    out = nic / nd.nic.gpus_per_nic
    classes: dict[str, dict] = {}
    cls = np.asarray(topo.link_class)
    for c in topo.link_classes():
        sel = cls == c
        classes[c] = {"links": int(sel.sum()), "raw_Bps": sorted(set(np.round(topo.raw_Bps[sel]).tolist())),
                      "effective_Bps": sorted(set(np.round(topo.capacity_Bps[sel]).tolist()))}
    n_nics = spec.nodes * nd.gpus // nd.nic.gpus_per_nic
    injection = n_nics * nic * nd.nic.efficiency
    uplinks = topo.capacity_Bps[np.isin(cls, ["fabric"]) & np.array([e[0].startswith("leaf") for e in topo.link_ends])]
    one_unit = isinstance(spec.fabric, RailOptimizedFabric) and spec.nodes <= spec.fabric.nodes_per_leaf
    bisection = injection / 2 if (uplinks.size == 0 or one_unit) else min(injection / 2, uplinks.sum() / 2)
    return {
        "name": topo.name,
        "gpus": topo.num_gpus,
        "nodes": spec.nodes,
        "gpus_per_node": nd.gpus,
        "scale_up": su.kind,
        "fabric": spec.fabric.kind,
        "links": topo.num_links,
        "link_classes": classes,
        "per_gpu_scale_up_Bps": up,
        "per_gpu_scale_up_effective_Bps": eff_up,
        "per_gpu_scale_out_Bps": out,
        "per_gpu_scale_out_effective_Bps": out * nd.nic.efficiency,
        "bisection_Bps": bisection,
    }
