"""Sweep files -> points: paths, product/zip, and errors that name the file, the YAML path and the value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sweep_helpers import TINY_SCENARIO, write_sweep

from etr_sim.config.sweep import parse_path
from etr_sim.errors import ConfigError
from etr_sim.sweep import load_sweep
from etr_sim.sweep.grid import PathMissing, set_path


def _problems(exc: ConfigError) -> dict[str, object]:
    return {p.path: p for p in exc.problems}


def test_parse_path():
    assert parse_path("routers[0].capacity_factor") == ["routers", 0, "capacity_factor"]
    assert parse_path("topology.overrides.node.nic.bandwidth_gbps") == ["topology", "overrides", "node", "nic",
                                                                         "bandwidth_gbps"]
    assert parse_path("a[1][2]") == ["a", 1, 2]
    for bad in ("", "a..b", "a[x]", ".a", "a.", "a b"):
        assert parse_path(bad) is None


def test_set_path_creates_mappings_but_not_list_items():
    data = {"routers": [{"kind": "etr"}], "topology": {"name": "x"}}
    set_path(data, ["topology", "overrides", "node", "nic", "bandwidth_gbps"], 200)
    assert data["topology"]["overrides"] == {"node": {"nic": {"bandwidth_gbps": 200}}}
    set_path(data, ["routers", 0, "capacity"], {"rule": "fixed", "tokens": 3})
    assert data["routers"][0]["capacity"] == {"rule": "fixed", "tokens": 3}
    with pytest.raises(PathMissing, match="routers has 1 entries, no index 2"):
        set_path(data, ["routers", 2, "kind"], "etr")
    with pytest.raises(PathMissing, match="not a list"):
        set_path(data, ["topology", 0], 1)


def test_product_and_zip(tmp_path):
    axes = [{"path": "topology.overrides.node.nic.bandwidth_gbps", "name": "nic_gbps", "values": [100, 400]},
            {"path": "routers[0].capacity_factor", "values": [1.0, 1.25, 2.0]}]
    sweep = load_sweep(write_sweep(tmp_path / "p", axes))
    assert [p.values for p in sweep.points][:4] == [
        {"nic_gbps": 100, "capacity_factor": 1.0}, {"nic_gbps": 100, "capacity_factor": 1.25},
        {"nic_gbps": 100, "capacity_factor": 2.0}, {"nic_gbps": 400, "capacity_factor": 1.0}]
    assert len(sweep.points) == 6
    p = sweep.points[4]
    assert p.loaded.topology.node.nic.bandwidth_gbps == 400
    assert p.loaded.scenario.routers[0].capacity_factor == 1.25
    assert len({q.key for q in sweep.points}) == 6  # every point its own cache key

    axes[1]["values"] = [1.0, 2.0]
    zipped = load_sweep(write_sweep(tmp_path / "z", axes, combine="zip"))
    assert [p.values for p in zipped.points] == [{"nic_gbps": 100, "capacity_factor": 1.0},
                                                 {"nic_gbps": 400, "capacity_factor": 2.0}]


def test_key_is_content_hash(tmp_path):
    """Same resolved scenario -> same key, wherever it comes from; any change -> another key."""
    axes = [{"path": "seed", "values": [0, 1, 0]}]
    a = load_sweep(write_sweep(tmp_path / "a", axes))
    b = load_sweep(write_sweep(tmp_path / "b", [{"path": "parallelism.seq_len", "values": [32]}]))
    assert a.points[0].key == a.points[2].key == b.points[0].key
    assert a.points[0].key != a.points[1].key


def test_inline_scenario_and_set(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    doc = {"name": "inline", "scenario": TINY_SCENARIO, "set": {"parallelism.seq_len": 64},
           "axes": [{"path": "seed", "values": [3]}]}
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(doc), encoding="utf-8")
    sweep = load_sweep(f)
    assert sweep.points[0].loaded.scenario.parallelism.seq_len == 64
    assert sweep.points[0].loaded.scenario.seed == 3


def test_axis_path_missing_is_config_error(tmp_path):
    axes = [
        {"path": "model.hiden_size", "values": [1]},  # typo: unknown key in the scenario schema
        {"path": "routers[5].capacity_factor", "values": [1.0]},  # no such router
        {"path": "routers[1].capacity_factor", "name": "cf", "values": [1.0]},  # etr has no capacity_factor
    ]
    f = write_sweep(tmp_path, axes)
    with pytest.raises(ConfigError) as err:
        load_sweep(f)
    assert err.value.file == str(f)
    probs = _problems(err.value)
    assert set(probs) == {"axes[0].path", "axes[1].path", "axes[2].path"}
    assert probs["axes[0].path"].value == "model.hiden_size"
    assert "routers has 2 entries, no index 5" in probs["axes[1].path"].message
    assert probs["axes[2].path"].value == "routers[1].capacity_factor"

    # A typo inside the topology (checked once the scenario itself is valid).
    f = write_sweep(tmp_path / "topo", [{"path": "topology.overrides.node.nic.bandwidth_gbs", "values": [1]}])
    with pytest.raises(ConfigError) as err:
        load_sweep(f)
    (p,) = err.value.problems
    assert p.path == "axes[0].path" and "does not exist" in p.message
    assert p.value == "topology.overrides.node.nic.bandwidth_gbs"


def test_bad_values_and_shape_reported_together(tmp_path):
    axes = [{"path": "parallelism.ep", "values": [16, 3, -1]},
            {"path": "seed", "values": [0]}]
    f = write_sweep(tmp_path, axes)
    with pytest.raises(ConfigError) as err:
        load_sweep(f)
    probs = _problems(err.value)
    msgs = [p.message for p in err.value.problems if p.path == "axes[0].values[1]"]
    assert probs["axes[0].values[1]"].value == 3 and any("not divisible" in m for m in msgs)
    assert probs["axes[0].values[2]"].value == -1

    f = write_sweep(tmp_path / "shape", [{"path": "seed", "values": [0, 1]}, {"path": "a..b", "values": [1]},
                                         {"path": "parallelism.seq_len", "name": "seed", "values": [8]}],
                    combine="zip")
    with pytest.raises(ConfigError) as err:
        load_sweep(f)
    probs = _problems(err.value)
    assert {"axes[1].path", "axes[1].values", "axes[2].name", "axes[2].values"} <= set(probs)

    f = write_sweep(tmp_path / "rel", [{"path": "seed", "values": [0]}], plot={"relative_to": "tcr", "axes": ["seed", "nic"]})
    with pytest.raises(ConfigError) as err:
        load_sweep(f)
    probs = _problems(err.value)
    assert probs["plot.relative_to"].value == "tcr" and probs["plot.axes[1]"].value == "nic"


def test_problem_not_from_an_axis_names_the_points(tmp_path):
    """nodes=1 leaves 8 GPUs for ep=16: the error is at parallelism.ep, caused by the nodes axis."""
    f = write_sweep(tmp_path, [{"path": "topology.nodes", "values": [2, 1]}])
    with pytest.raises(ConfigError) as err:
        load_sweep(f)
    (p,) = err.value.problems
    assert p.path == "scenario" and "parallelism.ep" in p.message and "points 1" in p.message and p.value == 16


def test_invalid_points_skip(tmp_path):
    f = write_sweep(tmp_path, [{"path": "topology.nodes", "values": [2, 1]}], invalid_points="skip")
    sweep = load_sweep(f)
    assert sweep.points[0].invalid is None and sweep.points[0].loaded is not None
    assert sweep.points[1].loaded is None and "parallelism.ep" in sweep.points[1].invalid


def test_missing_base_scenario(tmp_path):
    f = write_sweep(tmp_path, [{"path": "seed", "values": [0]}])
    doc = yaml.safe_load(f.read_text())
    doc["scenario"] = "nope.yaml"
    f.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_sweep(f)
    assert _problems(err.value)["scenario"].value == "nope.yaml"


def test_loading_a_sweep_imports_no_heavy_modules(tmp_path):
    """The submitting process needs neither torch, matplotlib nor Dask to expand a sweep."""
    import subprocess
    import sys
    from pathlib import Path

    f = write_sweep(tmp_path, [{"path": "seed", "values": [0, 1]}])
    code = (f"import sys, etr_sim.sweep, etr_sim.cli; s = etr_sim.sweep.load_sweep({str(f)!r}); "
            "assert len(s.points) == 2; heavy = {'torch', 'matplotlib', 'dask', 'distributed'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_bad_value_in_set_and_in_a_mapping_value(tmp_path):
    f = write_sweep(tmp_path, [{"path": "routers[1]", "name": "etr", "values": [{"kind": "etr", "bogus": 1}]}],
                    set={"parallelism.seq_len": 0})
    with pytest.raises(ConfigError) as err:
        load_sweep(f)
    probs = _problems(err.value)
    assert probs["set['parallelism.seq_len']"].value == 0
    # The axis path exists; the mapping it sets holds an unknown key: a bad value, not a missing path.
    assert "axes[0].values[0]" in probs and "routers[1].bogus" in probs["axes[0].values[0]"].message


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml")))
def test_example_sweeps_load(name):
    """Every example in sweeps/ expands into valid scenarios (nothing is run here)."""
    sweep = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / name)
    assert sweep.points and all(p.loaded is not None for p in sweep.points)
