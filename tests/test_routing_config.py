"""Router sections of a scenario: every kind loads, bad values are named with path and value, all at once;
and a scenario using every router kind runs end to end."""

from __future__ import annotations

import pytest
import yaml

from etr_sim.config import load_scenario
from etr_sim.errors import ConfigError

BASE = {
    "name": "routers",
    "model": {"hidden_size": 256, "ffn_hidden_size": 512, "num_experts": 16, "top_k": 2},
    "parallelism": {"ep": 16, "seq_len": 64},
    "activations": {"kind": "synthetic", "hidden_size": 64},
    "topology": {"name": "h100-single-leaf", "nodes": 2},
}

ALL_KINDS = [
    {"kind": "token_choice", "gate": "grap", "drop_policy": "arrival"},
    {"kind": "expert_choice"},
    {"kind": "etr", "nominations": 4, "nomination_threshold": 0.5, "capacity": {"rule": "dynamic", "margin": 1.5}},
    {"kind": "etr", "name": "etr_bound", "capacity": {"rule": "locmoe_first_batch", "delta": 0.05}, "locality_bias": 1.0},
    {"kind": "locmoe", "locality_mu": 0.5},
    {"kind": "hash", "key": "position"},
    {"kind": "random_uniform"},
    {"kind": "balanced"},
    {"kind": "node_limited", "max_nodes": 1, "node_score": "top2_sum"},
]


def write(tmp_path, routers):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, "routers": routers}))
    return path


def test_every_router_kind_loads_and_runs(tmp_path):
    from etr_sim.pipeline import run

    loaded = load_scenario(write(tmp_path, ALL_KINDS))
    assert [r.kind for r in loaded.scenario.routers][:3] == ["token_choice", "expert_choice", "etr"]
    result = run(loaded)
    assert len(result.summary) == len(ALL_KINDS)


def test_bad_router_values_are_all_reported_with_path_and_value(tmp_path):
    routers = [
        {"kind": "etr", "capacity": {"rule": "dynamic", "resonance_alpha": 1.5}},
        {"kind": "etr", "nomination_threshold": 0},
        {"kind": "locmoe", "capacity": {"rule": "locmoe_first_batch", "delta": -0.1}},
        {"kind": "node_limited", "max_nodes": 0},
        {"kind": "token_choice", "gate": "learned"},
        {"kind": "hash", "key": "word"},
        {"kind": "etr", "capacity": {"rule": "sometimes"}},
        {"kind": "teleport"},
    ]
    path = write(tmp_path, routers)
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    text = str(info.value)
    assert str(path) in text
    for where, value in [
        ("routers[0].capacity.resonance_alpha", "1.5"),
        ("routers[1].nomination_threshold", "0"),
        ("routers[2].capacity.delta", "-0.1"),
        ("routers[3].max_nodes", "0"),
        ("routers[4].gate", "'learned'"),
        ("routers[5].key", "'word'"),
        ("routers[6].capacity", "sometimes"),
        ("routers[7]", "teleport"),
    ]:
        lines = [line for line in text.splitlines() if where in line]
        assert lines, f"{where} missing from:\n{text}"
        assert any(value in line for line in lines), f"{value} not shown for {where}:\n{text}"


def test_locmoe_needs_grap_divisibility(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, "activations": {"kind": "synthetic", "hidden_size": 72},
                                    "routers": [{"kind": "locmoe"}]}))
    with pytest.raises(ConfigError, match=r"activations.hidden_size.*GrAP.*\(got 72\)"):
        load_scenario(path)


def test_pipeline_gives_locality_aware_routers_the_placement(tmp_path):
    """With a round-robin placement, LocMoE's 'local' experts are the round-robin ones, not contiguous."""
    import numpy as np

    from etr_sim.pipeline import make_layout, route_all
    from etr_sim.topology import build_topology

    path = tmp_path / "s.yaml"
    model = {**BASE["model"], "num_experts": 32}  # 2 experts per GPU: round robin != contiguous
    path.write_text(yaml.safe_dump({**BASE, "model": model, "placement": {"kind": "round_robin"},
                                    "routers": [{"kind": "locmoe", "locality_mu": 50.0,
                                                 "capacity": {"rule": "fixed", "tokens": 10**6}}]}))
    loaded = load_scenario(path)
    s = loaded.scenario
    topo = build_topology(loaded.topology, loaded.topology_source)
    layout = make_layout(s, topo)
    from etr_sim.routing import make_router

    router = make_router(s.routers[0], s.model, layout.ep, s.activations.hidden_size, s.seed)
    routed = route_all(s, topo, layout, s.activations, [router])[0]
    (batch, decision), *_ = routed.values()
    assert decision.stats["locality_share"] == 1.0  # a huge mu keeps every token on its node
    gpus_per_node = int(np.bincount(topo.gpu_node_index).max())
    node_of = lambda rank: rank // gpus_per_node  # noqa: E731 (ep = all 16 GPUs, 2 nodes)
    src_node = batch.src_node[decision.token]
    assert (node_of(decision.expert % layout.ep) == src_node).all()  # round robin: e on rank e mod ep
    assert not (node_of(decision.expert // 2) == src_node).all()  # contiguous would disagree
