"""Bad topology input: errors name the file, the YAML path and the value, all problems at once."""

import pytest
import yaml

from etr_sim.config import load_topology
from etr_sim.config.load import REPO_TOPOLOGIES, load_scenario
from etr_sim.errors import ConfigError, TopologyError
from etr_sim.topology import build_topology


def _write(tmp_path, data, name="t.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def _base():
    return yaml.safe_load((REPO_TOPOLOGIES / "dgx-h100.yaml").read_text())


def test_zero_and_negative_bandwidth_and_oversubscription_reported_together(tmp_path):
    d = _base()
    d["node"]["nic"] = {"bandwidth_gbps": 0}
    d["node"]["pcie"] = {"bandwidth_GBps": -5}
    d["fabric"] = {"kind": "fat_tree", "oversubscription": 0.5}
    p = _write(tmp_path, d)
    with pytest.raises(TopologyError) as e:
        load_topology(p)
    msg = str(e.value)
    assert str(p) in msg
    assert "node.nic.bandwidth_gbps" in msg and "got 0" in msg
    assert "node.pcie.bandwidth_GBps" in msg and "got -5" in msg
    assert "fabric.oversubscription" in msg and "got 0.5" in msg
    assert len(e.value.problems) == 3


def test_unknown_template_and_fabric(tmp_path):
    d = _base()
    d["node"]["template"] = "dgx-h900"
    with pytest.raises(TopologyError) as e:
        load_topology(_write(tmp_path, d))
    assert "node.template" in str(e.value) and "dgx-h900" in str(e.value) and "dgx-h100" in str(e.value)
    d = _base()
    d["fabric"]["kind"] = "torus"
    with pytest.raises(TopologyError) as e:
        load_topology(_write(tmp_path, d))
    assert "fabric" in str(e.value) and "torus" in str(e.value)


def test_disconnected_planes_name_the_pair(tmp_path):
    d = _base()
    d["fabric"] = {"kind": "multi_plane"}
    d["node"]["scale_up"] = {"kind": "none"}  # no NVLink to reach another plane
    p = _write(tmp_path, d)
    with pytest.raises(TopologyError) as e:
        build_topology(load_topology(p), str(p))
    assert str(p) in str(e.value) and "no path" in str(e.value) and "multi_plane" in str(e.value)


def test_inconsistent_node_counts(tmp_path):
    d = _base()
    d["node"]["nic"] = {"gpus_per_nic": 3}
    with pytest.raises(TopologyError) as e:
        load_topology(_write(tmp_path, d))
    assert "node" in str(e.value) and "gpus_per_nic=3" in str(e.value)


def test_scenario_override_errors_point_at_the_scenario(tmp_path):
    scen = yaml.safe_load((REPO_TOPOLOGIES.parent / "scenarios" / "quickstart.yaml").read_text())
    scen["topology"] = {"name": "dgx-h100", "nodes": 2, "overrides": {"node": {"nic": {"bandwidth_gbps": -1}}}}
    p = _write(tmp_path, scen, "s.yaml")
    with pytest.raises(ConfigError) as e:
        load_scenario(p)
    assert "topology.overrides.node.nic.bandwidth_gbps" in str(e.value) and "got -1" in str(e.value)
