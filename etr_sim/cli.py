"""Command line: parse, load, call the pipeline, print. No modelling logic lives here.

Exit codes: 0 success, 2 bad input (file, YAML path and value are printed), 1 internal error,
3 (sweep only) the sweep finished but some points failed (how many is printed; see points.csv),
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from etr_sim.errors import EtrSimError, InternalError


def _cmd_run(args: argparse.Namespace) -> int:
    from etr_sim.config import load_scenario
    from etr_sim.pipeline import run
    from etr_sim.report.progress import Progress
    from etr_sim.report.table import format_table, view_for
    from etr_sim.report.writer import default_out_dir, write_report

    loaded = load_scenario(args.scenario)
    s = loaded.scenario
    with Progress(enabled=not args.quiet) as progress:
        result = run(loaded, progress=progress.update)
    out = write_report(result, Path(args.out) if args.out else default_out_dir(loaded))
    print(f"{s.name}: {result.topology.num_gpus} GPUs on {loaded.topology.name}, scope {s.step.scope}, "
          f"{s.model.moe_layers} MoE layer(s), seed {s.seed}")
    print(format_table(result.summary, view_for(s.step.scope)))
    print(f"report: {out}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from etr_sim.config import load_scenario, load_topology
    from etr_sim.config.base import read_yaml
    from etr_sim.errors import ConfigError

    failed = 0
    for file in args.files:
        try:
            data = read_yaml(file)
            if "node" in data and "fabric" in data:  # a topology file
                from etr_sim.topology import build_topology

                build_topology(load_topology(file), file)
            else:
                load_scenario(file)
            print(f"{file}: ok")
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from etr_sim.report.sweep_plots import sweep_plots
    from etr_sim.sweep import default_out_dir, load_sweep, make_executor, run_sweep, write_tables

    sweep = load_sweep(args.sweep)
    out = Path(args.out) if args.out else default_out_dir(sweep)
    executor = make_executor(args.workers, args.scheduler, args.dask_local)
    print(f"{sweep.spec.name}: {len(sweep.points)} points x {len(sweep.router_labels)} routers "
          f"on {executor.description}; output {out}")
    cache = Path(args.cache) if args.cache else out / "points"
    try:
        outcome = run_sweep(sweep, executor, cache, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"interrupted: finished points are cached in {cache}; run the same command again to resume",
              file=sys.stderr)
        return 130
    finally:
        executor.close()
    write_tables(sweep, outcome, out)
    plot = sweep.spec.plot
    metric = args.metric or plot.metric
    metrics = [c for c in outcome.table.columns if c not in ("point", "router", "status", "error", "key",
                                                              *sweep.axis_columns)]
    if metrics and metric not in metrics:
        where = "--metric" if args.metric else f"{sweep.source}: plot.metric"
        print(f"error: {where}: not a metric of the results (got {metric!r}); choose from {', '.join(metrics)}",
              file=sys.stderr)
        return 2
    files = sweep_plots(outcome.table, sweep.axis_columns, metric, out / "plots",
                        relative_to=plot.relative_to if args.metric is None else None, log_x=plot.log_x,
                        title=sweep.spec.name)
    print(f"points: {outcome.ran} run, {outcome.cached} from cache, {outcome.failed} failed, "
          f"{outcome.invalid} invalid (skipped), {outcome.redone_corrupt} corrupt cache file(s) redone")
    for _, row in outcome.points[outcome.points.status == "failed"].iterrows():
        first = str(row.error).splitlines()[0] if row.error else ""
        print(f"  failed point {row.point}: {first}", file=sys.stderr)
    print(f"results: {out / 'results.parquet'} (+ .csv); plots: {', '.join(str(f) for f in files) or 'none'}")
    return 3 if outcome.failed else 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _cmd_compare(args: argparse.Namespace) -> int:
    from etr_sim.report.compare import load_runs
    from etr_sim.report.table import STEP_VIEW, format_table

    table = load_runs(args.runs)
    print(format_table(table, STEP_VIEW if "mfu" in table and table.mfu.notna().any() else None))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from etr_sim.config import Scenario, TopologySpec

    model = {"scenario": Scenario, "topology": TopologySpec}[args.kind]
    print(json.dumps(model.model_json_schema(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="etr-sim", description="MoE all-to-all cluster simulator (ETR vs TCR vs ECR)")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a scenario and write its report")
    r.add_argument("scenario", help="scenario YAML file")
    r.add_argument("--out", help="report folder (default reports/<scenario>/<run-id>)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_cmd_run)
    v = sub.add_parser("validate", help="check scenario or topology files without running them")
    v.add_argument("files", nargs="+")
    v.set_defaults(func=_cmd_validate)
    w = sub.add_parser("sweep", help="run a grid of scenarios (cached, resumable); exit 3 if some points failed")
    w.add_argument("sweep", help="sweep YAML file (see sweeps/README.md)")
    w.add_argument("--out", help="output folder (default reports/sweeps/<sweep name>)")
    w.add_argument("--cache", help="cache folder (default <out>/points); share one between sweeps to reuse points")
    where = w.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, default=max(1, min(4, os.cpu_count() or 1)),
                       help="local worker processes (default min(4, cores)); 1 runs in this process")
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="send points to this Dask scheduler")
    where.add_argument("--dask-local", type=_positive_int, metavar="N", help="start a Dask LocalCluster of N worker processes")
    w.add_argument("--metric", help="metric to plot against each axis (default: the sweep file's plot.metric)")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    w.set_defaults(func=_cmd_sweep)
    c = sub.add_parser("compare", help="put several run folders side by side")
    c.add_argument("runs", nargs="+", help="run folders (reports/<scenario>/<run-id>)")
    c.add_argument("--csv", help="also write the combined table here")
    c.set_defaults(func=_cmd_compare)
    sc = sub.add_parser("schema", help="print the JSON Schema of scenario or topology files")
    sc.add_argument("kind", choices=["scenario", "topology"])
    sc.set_defaults(func=_cmd_schema)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InternalError as exc:
        print(f"etr-sim internal error (please report): {exc}", file=sys.stderr)
        return 1
    except EtrSimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no report was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
