"""Scenario loading: every problem named with file, YAML path and value; all problems at once."""

import pytest
import yaml

from etr_sim.config import load_scenario
from etr_sim.errors import ConfigError

BASE = {
    "name": "t",
    "model": {"hidden_size": 256, "ffn_hidden_size": 512, "num_experts": 16, "top_k": 2},
    "parallelism": {"ep": 16, "seq_len": 64},
    "activations": {"kind": "synthetic", "hidden_size": 64},
    "routers": [{"kind": "token_choice"}, {"kind": "etr"}],
    "topology": {"name": "h100-single-leaf", "nodes": 2},
}


def load(tmp_path, data):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_scenario(path)


def errors_of(tmp_path, data) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, data)
    assert str(tmp_path / "s.yaml") in str(info.value)
    return info.value


def with_(path: str, value):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    cur = data
    keys = path.split(".")
    for k in keys[:-1]:
        cur = cur[int(k)] if isinstance(cur, list) else cur[k]
    last = keys[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return data


def test_valid_base_loads_and_fills_defaults(tmp_path):
    loaded = load(tmp_path, BASE)
    assert loaded.scenario.routers[0].capacity_factor == 1.25
    assert loaded.topology.nodes == 2
    assert loaded.resolved["topology"]["node"]["gpus"] == 8


@pytest.mark.parametrize(
    "path,value,expect_path",
    [
        ("model.hidden_size", -4, "model.hidden_size"),
        ("model.num_experts", "many", "model.num_experts"),
        ("parallelism.ep", 0, "parallelism.ep"),
        ("routers.0.capacity_factor", -1.0, "routers[0].capacity_factor"),
        ("routers.1.kind", "nope", "routers[1]"),
        ("topology.name", "no-such-topology", "topology.name"),
    ],
)
def test_bad_values_name_path_and_value(tmp_path, path, value, expect_path):
    err = errors_of(tmp_path, with_(path, value))
    assert any(p.path == expect_path for p in err.problems), err
    assert repr(value) in str(err) or str(value) in str(err)


def test_unknown_key_is_named(tmp_path):
    data = with_("model.hiden_size", 4096)
    err = errors_of(tmp_path, data)
    assert [p.path for p in err.problems] == ["model.hiden_size"]
    assert "unknown key" in str(err)


def test_all_problems_reported_at_once(tmp_path):
    data = with_("model.hidden_size", -1)
    data["parallelism"]["ep"] = "x"
    data["routers"][0]["drop_policy"] = "random"
    err = errors_of(tmp_path, data)
    assert {p.path for p in err.problems} >= {"model.hidden_size", "parallelism.ep", "routers[0].drop_policy"}


def test_cross_field_grap_divisibility_and_ep(tmp_path):
    data = with_("activations.hidden_size", 60)  # 60 % 16 != 0 and etr uses GrAP
    data["parallelism"]["ep"] = 32  # 16 experts not divisible by 32
    err = errors_of(tmp_path, data)
    paths = {p.path for p in err.problems}
    assert "activations.hidden_size" in paths and "parallelism.ep" in paths
    assert "60" in str(err) and "32" in str(err)


def test_negative_bandwidth_in_topology_override_points_at_scenario_path(tmp_path):
    data = with_("topology.overrides", {"node": {"nic": {"bandwidth_gbps": -400}}})
    err = errors_of(tmp_path, data)
    assert any(p.path == "topology.overrides.node.nic.bandwidth_gbps" and p.value == -400 for p in err.problems)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_scenario(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_scenario(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: a\nname: b\n")
    with pytest.raises(ConfigError, match="duplicate key"):
        load_scenario(dup)


def test_gemm_dtype_needs_a_peak(tmp_path):
    data = with_("compute", {"expert_gemm_dtype": "fp8"})
    err = errors_of(tmp_path, data)
    assert [p.path for p in err.problems] == ["compute.expert_gemm_dtype"]
    ok = with_("compute", {"expert_gemm_dtype": "fp8", "peak_tflops_by_dtype": {"fp8": 1979}})
    assert load(tmp_path, ok).scenario.compute.peak_flops("fp8") == 1979e12


def test_fp8_expert_gemms_halve_expert_time():
    import numpy as np

    from etr_sim.config.scenario import ComputeSpec, ModelSpec
    from etr_sim.sim.compute import expert_ffn_time_s

    rows = np.array([[4096.0]])
    bf16 = expert_ffn_time_s(rows, ModelSpec(), ComputeSpec())
    fp8 = expert_ffn_time_s(rows, ModelSpec(), ComputeSpec(expert_gemm_dtype="fp8", peak_tflops_by_dtype={"fp8": 1978}))
    assert fp8[0] == pytest.approx(bf16[0] / 2)
