"""Corrupt inputs end in a clear ConfigError/TopologyError naming the file (and the entry): truncated
safetensors shards, a capture.json that disagrees with its tensors, a disconnected scale-out fabric."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from etr_sim.activations.store import load_capture
from etr_sim.cli import main
from etr_sim.config.load import load_topology
from etr_sim.errors import ConfigError, TopologyError
from etr_sim.topology import build_topology

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = ROOT / "data/activations/minilm-l6-essays"


@pytest.fixture
def capture(tmp_path) -> Path:
    d = tmp_path / "cap"
    shutil.copytree(CAPTURE, d)
    return d


def _edit(folder: Path, fn) -> None:
    meta = json.loads((folder / "capture.json").read_text())
    fn(meta)
    (folder / "capture.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("keep", [0.5, 0.001])
def test_truncated_shard(capture, keep):
    shard = capture / "shard-00001.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: max(int(len(data) * keep), 5)])
    with pytest.raises(ConfigError) as exc:
        load_capture(capture, [5])
    assert exc.value.file == str(shard) and "cannot read safetensors file" in str(exc.value)


@pytest.mark.parametrize("edit, where, words", [
    (lambda m: m.update(hidden_size=512), "shards[0]", "expected [873, 512]"),
    (lambda m: m["shards"][0].update(tokens=880), "shards[0].tokens", "expected [880]"),
    (lambda m: m.update(num_tokens=5), "num_tokens", "the shards hold 2140 tokens"),
    (lambda m: m.update(sequence_offsets=m["sequence_offsets"][:-1]), "sequence_offsets", "ends at"),
    (lambda m: m["sequence_offsets"].__setitem__(1, 10**6), "sequence_offsets", "non-decreasing"),
    (lambda m: m["shards"].append(dict(m["shards"][0])), "num_tokens", "the shards hold 3013"),
    # structure (each crashed with KeyError / TypeError / AttributeError before)
    (lambda m: m.pop("hidden_size"), "hidden_size", "positive integer"),
    (lambda m: m.pop("shards"), "shards", "non-empty list"),
    (lambda m: m["shards"][0].pop("file"), "shards[0].file", "safetensors file"),
    (lambda m: m.update(shards=5), "shards", "non-empty list"),
    (lambda m: m.update(layers=[{"x": 1}]), "layers", "list of {layer"),
    (lambda m: m.pop("sequence_offsets"), "sequence_offsets", "starting at 0"),
])
def test_metadata_that_disagrees_with_the_tensors(capture, edit, where, words):
    _edit(capture, edit)
    with pytest.raises(ConfigError) as exc:
        load_capture(capture, [5])
    assert exc.value.file == str(capture / "capture.json")
    assert any(p.path == where and words in p.message + str(p.value) for p in exc.value.problems), str(exc.value)


def test_capture_json_not_an_object(capture):
    (capture / "capture.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_capture(capture)


def test_corrupt_capture_in_a_run_exits_2(capture, tmp_path, capsys):
    _edit(capture, lambda m: m["shards"][1].update(tokens=1))
    data = yaml.safe_load((ROOT / "scenarios/quickstart.yaml").read_text())
    data["activations"]["path"] = str(capture)
    scen = tmp_path / "s.yaml"
    scen.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main(["run", str(scen), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "capture.json" in err and "shards[1].tokens" in err
    assert not out.exists()


def test_cycle_free_but_disconnected_fabric(tmp_path, capsys):
    """Multi-plane fabric (each plane a tree) and no scale-up between a node's GPUs: planes never meet."""
    d = yaml.safe_load((ROOT / "topologies/h800-multiplane.yaml").read_text())
    d["node"]["scale_up"] = {"kind": "none"}
    p = tmp_path / "islands.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(TopologyError) as exc:
        build_topology(load_topology(p), str(p))
    assert exc.value.file == str(p) and exc.value.problems[0].path == "fabric"
    assert "no path" in str(exc.value) and "multi_plane" in str(exc.value)
    assert main(["validate", str(p)]) == 2
    assert "no path" in capsys.readouterr().err
