"""Run a sweep with a cache, and assemble its tidy results table.

Output folder (default ``reports/sweeps/<sweep name>/``):
- ``points/<key>.json``: the cache, one file per finished point (see ``etr_sim.sweep.cache``)
- ``results.parquet`` and ``results.csv``: one row per (point, router) with the axis values and
  every summary metric; a failed or invalid point is one row with empty router and metrics, its
  status and error. Deterministic: sorted by point then router order, whatever ran where.
- ``points.csv``: one row per point with status, cached or run now, and seconds it took
- ``sweep.resolved.yaml``: the sweep and every point's axis values and cache key
- ``plots/<metric>_vs_<axis>.png``: written by ``etr_sim.report.sweep_plots``
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from etr_sim.sweep.cache import ResultCache
from etr_sim.sweep.execute import Runner, run_scenario
from etr_sim.sweep.grid import Sweep


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep run produced. ``table``: [points x routers] rows (see module doc);
    ``points``: one row per point. Counts are of points."""

    table: pd.DataFrame
    points: pd.DataFrame
    ran: int
    cached: int
    failed: int
    invalid: int
    redone_corrupt: int


def _column(values: list) -> list:
    """Axis values as one Parquet-friendly column: numbers, strings or bools as they are; mixed
    types and mappings/lists as their JSON text."""
    kinds = {type(v) for v in values}
    if kinds <= {int, float} or kinds == {str} or kinds == {bool}:
        return values
    return [json.dumps(v, sort_keys=True) for v in values]


def metric_columns(payloads: dict[int, dict]) -> list[str]:
    """The summary's columns (all but ``router``), in the order the pipeline writes them."""
    out: dict[str, None] = {}
    for index in sorted(payloads):
        for row in payloads[index]["rows"]:
            out.update((k, None) for k in row if k != "router")
    return list(out)


def results_table(sweep: Sweep, payloads: dict[int, dict]) -> pd.DataFrame:
    """[points x routers] tidy table, in point order then the scenario's router order. The metric
    columns are whatever the pipeline's summary holds (one per summary column)."""
    cols = sweep.axis_columns
    metrics = metric_columns(payloads)
    recs: list[dict] = []
    for p in sweep.points:
        pay = payloads.get(p.index)
        base = {"point": p.index, **{c: p.values[c] for c in cols}}
        if p.invalid is not None:
            recs.append({**base, "router": None, "status": "invalid", "error": p.invalid, "key": p.key})
        elif pay is None:
            recs.append({**base, "router": None, "status": "not_run", "error": "interrupted", "key": p.key})
        elif pay["status"] != "ok":
            recs.append({**base, "router": None, "status": pay["status"], "error": pay["error"], "key": p.key})
        else:
            for row in pay["rows"]:
                recs.append({**base, **row, "status": "ok", "error": None, "key": p.key})
    table = pd.DataFrame(recs, columns=["point", *cols, "router", *metrics, "status", "error", "key"])
    for c in cols:
        table[c] = _column(table[c].tolist())
    table["router"] = table["router"].astype("string")
    table["error"] = table["error"].astype("string")
    for m in metrics:
        if pd.api.types.is_numeric_dtype(table[m]):
            table[m] = table[m].astype("float64")
    return table


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_tables(sweep: Sweep, outcome: SweepOutcome, out_dir: Path) -> None:
    """results.parquet, results.csv, points.csv and sweep.resolved.yaml (each written atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(out_dir / "results.parquet", lambda p: outcome.table.to_parquet(p, index=False))
    _atomic_write(out_dir / "results.csv", lambda p: outcome.table.to_csv(p, index=False))
    _atomic_write(out_dir / "points.csv", lambda p: outcome.points.to_csv(p, index=False))
    resolved = {
        "sweep": sweep.spec.model_dump(mode="json"),
        "source": sweep.source,
        "points": [{"point": p.index, "key": p.key, **p.values} for p in sweep.points],
    }
    _atomic_write(out_dir / "sweep.resolved.yaml",
                  lambda p: p.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8"))


def default_out_dir(sweep: Sweep, root: Path = Path("reports") / "sweeps") -> Path:
    return root / sweep.spec.name


def run_sweep(sweep: Sweep, executor, cache_dir: str | Path, runner: Runner = run_scenario,
              progress: bool = True) -> SweepOutcome:
    """Run every point not already in the cache on ``executor``; cache each as it finishes.

    A KeyboardInterrupt (or any error of the machinery itself) propagates after the finished points
    are safely in the cache; rerunning the sweep picks up from there.
    """
    cache = ResultCache(cache_dir)
    payloads: dict[int, dict] = {}
    cached: set[int] = set()
    todo = []
    redone = 0
    for p in sweep.points:
        if p.invalid is not None:
            continue
        hit = cache.get(p.key)
        if hit is not None:
            payloads[p.index] = {**hit, "index": p.index, "elapsed_s": hit.get("elapsed_s", float("nan"))}
            cached.add(p.index)
        else:
            redone += cache.is_corrupt(p.key)
            todo.append(p)

    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=sweep.spec.name, unit="point", dynamic_ncols=True)
    try:
        for pay in executor.run(todo, runner):
            payloads[pay["index"]] = pay
            if pay["status"] == "ok":
                cache.put(pay["key"], {k: v for k, v in pay.items() if k != "index"})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(failed=sum(v["status"] != "ok" for v in payloads.values()))
    finally:
        if bar is not None:
            bar.close()

    table = results_table(sweep, payloads)
    prows = []
    for p in sweep.points:
        pay = payloads.get(p.index)
        status = "invalid" if p.invalid is not None else (pay["status"] if pay else "not_run")
        prows.append({"point": p.index, **p.values, "status": status, "cached": p.index in cached,
                      "elapsed_s": pay["elapsed_s"] if pay else float("nan"), "key": p.key,
                      "error": p.invalid or (pay or {}).get("error")})
    points = pd.DataFrame(prows)
    for c in sweep.axis_columns:
        points[c] = _column(points[c].tolist())
    failed = sum(1 for p in sweep.points if p.invalid is None and payloads[p.index]["status"] != "ok")
    return SweepOutcome(table, points, ran=len(todo), cached=len(cached), failed=failed,
                        invalid=sum(p.invalid is not None for p in sweep.points), redone_corrupt=redone)
