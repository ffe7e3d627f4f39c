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
