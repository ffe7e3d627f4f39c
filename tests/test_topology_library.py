"""Topology library and path rules: every file builds; paths follow the documented routing."""

import numpy as np
import pytest

from etr_sim.config import load_topology
from etr_sim.config.load import REPO_TOPOLOGIES, library_topologies
from etr_sim.topology import build_topology
from etr_sim.topology.describe import describe

REQUIRED = ["dgx-a100", "dgx-h100", "h800-multiplane", "gb200-nvl72", "ascend-910b", "ascend-910a", "pcie-only",
            "dgx-h100-oversub2"]


def _topo(name, nodes=None, **over):
    return build_topology(load_topology(REPO_TOPOLOGIES / f"{name}.yaml", nodes=nodes, overrides=over))


def _classes(topo, path):
    return [topo.link_class[i] for i in path]


def test_library_has_the_fixed_names_and_each_cites_sources():
    assert set(REQUIRED) <= set(library_topologies())
    for name in REQUIRED:
        text = (REPO_TOPOLOGIES / f"{name}.yaml").read_text()
        assert "Source" in text, name


@pytest.mark.parametrize("name", REQUIRED + ["h100-single-leaf"])
def test_every_library_topology_builds_and_resizes(name):
    t = _topo(name)
    spec = load_topology(REPO_TOPOLOGIES / f"{name}.yaml")
    t2 = _topo(name, nodes=spec.nodes * 2)
    assert t2.num_gpus == 2 * t.num_gpus
    assert (t.capacity_Bps > 0).all() and (t.latency_s >= 0).all()
    # all-pairs paths exist and start/end at the right GPUs
    g = t.num_gpus
    src, dst = np.repeat(np.arange(g), g), np.tile(np.arange(g), g)
    offsets, links = t.paths(src, dst)
    for f in np.flatnonzero(src != dst)[:: max(1, g * g // 200)]:
        p = links[offsets[f]:offsets[f + 1]]
        assert t.link_ends[p[0]][0] == t.gpu_nodes[src[f]] and t.link_ends[p[-1]][1] == t.gpu_nodes[dst[f]]
        for a, b in zip(p[:-1], p[1:]):
            assert t.link_ends[a][1] == t.link_ends[b][0]  # contiguous


def test_dgx_h100_paths_and_bandwidths():
    t = _topo("dgx-h100", nodes=64)
    assert _classes(t, t.path(0, 1)) == ["scale_up", "scale_up"]
    assert _classes(t, t.path(0, 8)) == ["pcie", "nic", "nic", "pcie"]  # same rail, same leaf
    assert _classes(t, t.path(0, 9)) == ["pcie", "nic", "fabric", "fabric", "nic", "pcie"]  # cross rail via spines
    assert _classes(t, t.path(0, 8 * 40)) == ["pcie", "nic", "fabric", "fabric", "nic", "pcie"]  # other SU
    d = describe(t)
    assert d["per_gpu_scale_up_Bps"] == 450e9 and d["per_gpu_scale_out_Bps"] == 50e9


def test_rail_aligned_routing_forwards_over_nvlink_first():
    t = _topo("dgx-h100", nodes=4, fabric={"routing": "rail_aligned"})
    p = t.path(0, 9)  # GPU 0 (rail 0) -> GPU 9 (node 1, rail 1): NVLink to GPU 1, then rail 1
    assert _classes(t, p) == ["scale_up", "scale_up", "pcie", "nic", "nic", "pcie"]
    assert t.link_ends[p[1]][1] == "gpu1"


def test_multiplane_never_crosses_planes_on_the_network():
    t = _topo("h800-multiplane", nodes=4)
    p = t.path(3, 8 + 5)
    assert _classes(t, p)[:2] == ["scale_up", "scale_up"] and t.link_ends[p[1]][1] == "gpu5"


def test_oversubscribed_leaf_uplink_is_half_the_downlink():
    t = _topo("dgx-h100-oversub2", nodes=8)
    cls = np.asarray(t.link_class)
    up = t.raw_Bps[(cls == "fabric")]
    assert np.allclose(up, 32 * 50e9 / 2)
    assert describe(t)["bisection_Bps"] == pytest.approx(2 * 32 * 50e9 / 2 * 0.95 / 2)


def test_gb200_nvlink_domain_spans_18_trays():
    t = _topo("gb200-nvl72", nodes=36)
    assert _classes(t, t.path(0, 71)) == ["scale_up", "scale_up"]  # tray 0 -> tray 17, same rack
    assert "nic" in _classes(t, t.path(0, 72))  # next rack: network


def test_ascend_910b_full_mesh_and_910a_groups():
    b = _topo("ascend-910b", nodes=2)
    assert _classes(b, b.path(0, 7)) == ["scale_up"]
    assert describe(b)["per_gpu_scale_up_Bps"] == pytest.approx(7 * 56e9)
    a = _topo("ascend-910a", nodes=8)
    assert _classes(a, a.path(0, 3)) == ["scale_up"]
    assert _classes(a, a.path(0, 4)) == ["pcie_p2p", "pcie_p2p"]  # across HCCS groups: PCIe
    assert _classes(a, a.path(0, 8 * 4)) == ["pcie", "nic", "fabric", "fabric", "nic", "pcie"]  # 4 servers per leaf


def test_pcie_only_goes_through_nics():
    t = _topo("pcie-only")
    assert _classes(t, t.path(0, 1)) == ["pcie", "pcie"]  # same PCIe switch
    assert _classes(t, t.path(0, 2)) == ["pcie", "pcie", "nic", "nic", "pcie", "pcie"]  # inside the node, via NICs


def test_three_tier_fat_tree_and_hash_ecmp():
    t = _topo("dgx-h100-oversub2", nodes=32, fabric={"tiers": 3, "leaves_per_pod": 2})
    assert _classes(t, t.path(0, 8 * 31)) == ["pcie", "nic", "fabric", "fabric_core", "fabric_core", "fabric",
                                             "nic", "pcie"]
    h = _topo("dgx-h100-oversub2", nodes=16, fabric={"ecmp": "hash", "spines": 4})
    src = np.repeat(np.arange(32), 64)
    dst = 64 + np.tile(np.arange(64), 32)
    offs, links = h.paths(src, dst)
    spine_links = links[offs[:-1] + 2]  # leaf -> spine hop of each flow
    assert len(np.unique(spine_links)) == 4  # flows spread over all spines
    offs2, links2 = h.paths(src, dst)
    assert np.array_equal(links, links2)  # deterministic
