"""Tiny scenarios and sweep files shared by the tests/test_sweep_*.py files (not a test module)."""

from __future__ import annotations

from pathlib import Path

import yaml

TINY_SCENARIO = {
    "name": "tiny",
    "seed": 0,
    "model": {"hidden_size": 128, "ffn_hidden_size": 256, "num_experts": 16, "top_k": 2, "moe_layers": 1},
    "parallelism": {"ep": 16, "seq_len": 32},
    "activations": {"kind": "synthetic", "hidden_size": 64, "num_clusters": 4},
    "routers": [{"kind": "token_choice"}, {"kind": "etr"}],
    "topology": {"name": "h100-single-leaf", "nodes": 2},
}


def write_sweep(folder: Path, axes: list[dict], combine: str = "product", scenario: dict | None = None,
                **extra) -> Path:
    """Write tiny.yaml (the base scenario) and sweep.yaml into ``folder``; return the sweep file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(scenario or TINY_SCENARIO), encoding="utf-8")
    doc = {"name": "tiny-sweep", "scenario": "tiny.yaml", "combine": combine, "axes": axes, **extra}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def broken_runner(loaded):
    """Fails the point whose NIC runs at 123 Gb/s; runs every other point normally."""
    from etr_sim.sweep.execute import run_scenario

    if loaded.topology.node.nic.bandwidth_gbps == 123:
        raise RuntimeError("deliberately broken point")
    return run_scenario(loaded)


class Interrupt(BaseException):
    """Stands in for a kill: a BaseException, so execute_point does not record it as a failure."""


def interrupting_runner(loaded):
    """Runs points normally until the NIC runs at 300 Gb/s, then 'kills' the sweep."""
    from etr_sim.sweep.execute import run_scenario

    if loaded.topology.node.nic.bandwidth_gbps == 300:
        raise Interrupt()
    return run_scenario(loaded)
