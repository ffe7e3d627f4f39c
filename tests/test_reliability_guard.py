"""Resource guard: cheap estimates, refusal with the estimate and the knob to turn, --max-memory parsing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from etr_sim import guard
from etr_sim.cli import main
from etr_sim.config.load import load_scenario, load_scenario_dict
from etr_sim.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_parse_bytes():
    assert guard.parse_bytes("2GB") == 2 * 10**9
    assert guard.parse_bytes("512MiB") == 512 * 2**20
    assert guard.parse_bytes("1.5 GiB") == int(1.5 * 2**30)
    assert guard.parse_bytes("1000") == 1000
    for bad in ("", "lots", "-1GB", "2XB", "0"):
        with pytest.raises(ConfigError, match="max_memory"):
            guard.parse_bytes(bad)


def test_estimate_grows_with_tokens_and_gpus_and_stays_cheap():
    data = yaml.safe_load((ROOT / "scenarios/quickstart.yaml").read_text())
    base = guard.estimate(load_scenario_dict(data, ROOT / "scenarios/quickstart.yaml"))
    more_tokens = dict(data, parallelism={**data["parallelism"], "seq_len": 8 * data["parallelism"]["seq_len"]})
    big = guard.estimate(load_scenario_dict(more_tokens, ROOT / "scenarios/quickstart.yaml"))
    # captured data: the distinct captured rows are held once; only the [N] row index grows
    n = 16 * data["parallelism"]["seq_len"]
    assert big.terms["activations"] - base.terms["activations"] == pytest.approx(8.0 * 7 * n)
    assert big.terms["routing"] > base.terms["routing"]
    synth = dict(data, activations={"kind": "synthetic", "hidden_size": 384})
    small_s = guard.estimate(load_scenario_dict(synth, ROOT / "scenarios/quickstart.yaml"))
    big_s = guard.estimate(load_scenario_dict(dict(synth, parallelism=more_tokens["parallelism"]),
                                              ROOT / "scenarios/quickstart.yaml"))
    assert big_s.terms["activations"] == pytest.approx(8 * small_s.terms["activations"])
    assert big_s.terms["activations"] > 8 * base.terms["activations"]  # captured: far below [N, d] float32
    many = dict(data, topology={"name": "dgx-h100", "nodes": 16000})  # 128000 GPUs: estimated, not built
    t0 = time.perf_counter()
    loaded = load_scenario_dict({**many, "parallelism": {**data["parallelism"], "ep": 16}},
                                ROOT / "scenarios/quickstart.yaml")
    est = guard.estimate(loaded)
    assert time.perf_counter() - t0 < 5.0
    assert est.flows == 4 * 128000**2 and est.terms["flows"] > base.terms["flows"] * 1e6


def test_available_memory_reads_proc_meminfo_and_falls_back(monkeypatch, tmp_path):
    avail = guard.available_memory_bytes()
    assert avail is None or avail > 0
    monkeypatch.setattr(guard, "_meminfo_kb", lambda key, path="": None)
    assert guard.available_memory_bytes() is None
    assert guard.current_rss_bytes() == 0
    loaded = load_scenario(ROOT / "scenarios/quickstart.yaml")
    assert guard.check(loaded).peak_bytes > 0  # no limit known: runs


def test_check_refuses_with_estimate_and_knob():
    loaded = load_scenario(ROOT / "scenarios/quickstart.yaml")
    with pytest.raises(ConfigError) as exc:
        guard.check(loaded, max_memory_bytes=10**6)
    msg = str(exc.value)
    assert "quickstart.yaml" in msg and "estimated peak memory" in msg and "--max-memory" in msg
    assert "Largest term: routing" in msg and "fewer tokens per GPU" in msg  # captured inputs are held once


def test_check_refuses_more_than_the_machine_has(monkeypatch):
    loaded = load_scenario(ROOT / "scenarios/quickstart.yaml")
    monkeypatch.setattr(guard, "available_memory_bytes", lambda: 1000)
    with pytest.raises(ConfigError, match="available memory"):
        guard.check(loaded)


def test_cli_max_memory_exits_2_before_running(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", str(ROOT / "scenarios/quickstart.yaml"), "--out", str(out), "--max-memory", "1MB"]) == 2
    err = capsys.readouterr().err
    assert "exceeds --max-memory" in err and "turn it down" in err
    assert not out.exists()
    assert main(["run", str(ROOT / "scenarios/quickstart.yaml"), "--out", str(out), "--max-memory", "many"]) == 2
    assert "expected a positive size" in capsys.readouterr().err
