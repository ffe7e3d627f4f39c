"""Benchmark: the resource guard's peak-memory estimate vs the measured peak RSS, and the wall-time
cost of the always-on invariant checks.

Usage: python benchmarks/bench_guard.py SCENARIO [--no-invariants]
Runs the first training stage (as bench_step.py). Prints one JSON line: estimate terms, estimated
peak, measured peak RSS (getrusage ru_maxrss), their ratio, wall seconds. ``--no-invariants``
replaces the checks by no-ops (benchmark only; etr-sim itself has no switch) to measure their cost.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_step import first_stage_only  # noqa: E402

from etr_sim import invariants  # noqa: E402
from etr_sim.config import load_scenario  # noqa: E402
from etr_sim.guard import estimate  # noqa: E402
from etr_sim.pipeline import run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario")
    ap.add_argument("--no-invariants", action="store_true")
    args = ap.parse_args()
    if args.no_invariants:
        for name in dir(invariants):
            if name.startswith("check_"):
                setattr(invariants, name, lambda *a, **k: None)
    loaded = first_stage_only(load_scenario(args.scenario))
    import etr_sim.pipeline  # noqa: F401  (imports torch etc.: part of the measured baseline)

    est = estimate(loaded)
    t0 = time.perf_counter()
    run(loaded)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "scenario": loaded.scenario.name,
        "invariants": not args.no_invariants,
        "wall_s": round(wall, 3),
        "baseline_rss_MiB": round(est.baseline_bytes / 2**20, 1),
        "terms_MiB": {k: round(v / 2**20, 1) for k, v in est.terms.items()},
        "flows": est.flows,
        "estimated_peak_MiB": round(est.peak_bytes / 2**20, 1),
        "measured_peak_MiB": round(peak / 2**20, 1),
        "estimate_over_measured": round(est.peak_bytes / peak, 3),
    }))


if __name__ == "__main__":
    main()
