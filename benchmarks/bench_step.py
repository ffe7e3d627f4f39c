"""Benchmark: one full step of every router of a scenario (routing + plans + SimPy), one process.

Usage: python benchmarks/bench_step.py SCENARIO [--training-stages N]
Prints one JSON line: scenario, routers, gpus, wall_s, peak_rss_bytes, step_s per router.
By default only the first training stage is simulated (one step per router), as the target asks.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etr_sim.config import load_scenario  # noqa: E402
from etr_sim.config.load import LoadedScenario  # noqa: E402
from etr_sim.pipeline import run  # noqa: E402


def first_stage_only(loaded: LoadedScenario) -> LoadedScenario:
    return replace(loaded, training_stages=loaded.training_stages[:1],
                   variants=tuple(first_stage_only(v) for v in loaded.variants))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario")
    ap.add_argument("--all-training-stages", action="store_true")
    args = ap.parse_args()
    loaded = load_scenario(args.scenario)
    if not args.all_training_stages:
        loaded = first_stage_only(loaded)
    t0 = time.perf_counter()
    result = run(loaded)
    wall = time.perf_counter() - t0
    print(json.dumps({
        "scenario": loaded.scenario.name,
        "routers": result.summary.router.tolist(),
        "gpus": result.topology.num_gpus,
        "wall_s": round(wall, 3),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "step_s": dict(zip(result.summary.router, result.summary.step_s.round(6))),
    }))


if __name__ == "__main__":
    main()
