"""Perfetto / Chrome trace JSON of one simulated step: a process per pipeline stage with a compute
and a communication lane, ops as complete events, and a "links" process with one utilisation
counter per link class (mean and max over the class's links; times in microseconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def trace_events(ops: pd.DataFrame, router: str, training_stage: int = 0) -> list[dict]:
    mine = ops[(ops.router == router) & (ops.training_stage == training_stage)]
    events: list[dict] = []
    for stage in sorted(mine.stage.unique()):
        events.append({"ph": "M", "name": "process_name", "pid": int(stage), "args": {"name": f"pipeline stage {stage}"}})
        for tid, lane in ((0, "compute"), (1, "comm")):
            events.append({"ph": "M", "name": "thread_name", "pid": int(stage), "tid": tid, "args": {"name": lane}})
    for r in mine.itertuples():
        events.append({
            "ph": "X", "name": r.op, "cat": r.category, "pid": int(r.stage), "tid": 0 if r.stream == "compute" else 1,
            "ts": r.start_s * 1e6, "dur": (r.end_s - r.start_s) * 1e6,
            "args": {"microbatch": int(r.microbatch), "direction": r.direction, "layer": int(r.layer),
                     "bytes": float(r.bytes), "gpu_max_us": r.gpu_max_s * 1e6, "gpu_mean_us": r.gpu_mean_s * 1e6},
        })
    return events


LINKS_PID = 10_000


def link_events(series: pd.DataFrame, router: str) -> list[dict]:
    """Counter events: utilisation (%) of each link class over the step."""
    if series is None or series.empty:
        return []
    mine = series[series.router == router]
    events = [{"ph": "M", "name": "process_name", "pid": LINKS_PID, "args": {"name": "links (utilisation %)"}}]
    for r in mine.itertuples():
        events.append({"ph": "C", "name": r.link_class, "pid": LINKS_PID, "ts": r.t_s * 1e6,
                       "args": {"mean": round(100 * r.mean_util, 3), "max": round(100 * r.max_util, 3)}})
    return events


def write_trace(ops: pd.DataFrame, router: str, path: Path, series: pd.DataFrame | None = None) -> None:
    events = trace_events(ops, router) + link_events(series, router)
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}), encoding="utf-8")
