"""Command line: parse, load, call the pipeline, print. No modelling logic lives here.

Exit codes: 0 success, 2 bad input (file, YAML path and value are printed), 1 internal error,
130 interrupted. ``sweep`` counts failed points in its exit code instead, like GNU parallel does
for jobs: 1-100 that many points failed (the sweep finished; see points.csv), 101 more than 100
failed, 255 bad input (command line included; the same messages) or an internal error.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from etr_sim.errors import EtrSimError, InternalError


def _cmd_run(args: argparse.Namespace) -> int:
    from etr_sim.config import load_scenario
    import etr_sim.preload  # noqa: F401 - the fast way to import the pipeline
    from etr_sim.pipeline import run
    from etr_sim.report.progress import Progress
    from etr_sim.report.table import format_table, view_for
    from etr_sim.guard import check, parse_bytes
    from etr_sim.report.writer import Interrupted, default_out_dir, write_report

    limit = parse_bytes(args.max_memory) if args.max_memory else None
    if args.quick:
        from etr_sim.config.base import read_yaml
        from etr_sim.config.load import load_scenario_dict
        from etr_sim.config.reduce import QUICK_OVERRIDES_DOC, quick

        load_scenario(args.scenario)  # the full scenario must be valid first (all its problems, with paths)
        loaded = load_scenario_dict(quick(read_yaml(args.scenario)), args.scenario)
        print(QUICK_OVERRIDES_DOC, file=sys.stderr)
    else:
        loaded = load_scenario(args.scenario)
    s = loaded.scenario
    est = check(loaded, limit)  # refuses (exit 2) a run that would not fit, naming the knob to turn
    if not args.quiet:
        print(f"estimated peak memory {est.peak_bytes / 1e9:.3g} GB, {est.flows} flows per router step", file=sys.stderr)
    last = ["before the first simulation finished"]

    def update(done: int, total: int, label: str) -> None:
        last[0] = f"after {done}/{total} simulations (last: {label})"
        progress.update(done, total, label)

    try:
        with Progress(enabled=not args.quiet) as progress:
            result = run(loaded, progress=update)
    except KeyboardInterrupt as exc:
        raise Interrupted(f"while simulating, {last[0]} (no report was written)") from exc
    out = write_report(result, Path(args.out) if args.out else default_out_dir(loaded))
    print(f"{s.name}: {result.topology.num_gpus} GPUs on {loaded.topology.name}, scope {s.step.scope}, "
          f"{s.model.moe_layers} MoE layer(s), seed {s.seed}")
    print(format_table(result.summary, view_for(s.step.scope)))
    hbm = s.compute.hbm_capacity_GB * 1e9
    for row in result.summary.itertuples():
        if row.memory_bytes > hbm:
            print(f"warning: {row.router}: estimated {row.memory_bytes / 1e9:.1f} GB per GPU exceeds "
                  f"compute.hbm_capacity_GB={s.compute.hbm_capacity_GB:g} (see memory_* columns of summary.csv)",
                  file=sys.stderr)
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
            elif "axes" in data and "scenario" in data:  # a sweep file: every point is checked
                from etr_sim.sweep import load_sweep

                sweep = load_sweep(file)
                print(f"{file}: ok ({len(sweep.points)} points)")
                continue
            else:
                load_scenario(file)
            print(f"{file}: ok")
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            failed += 1
    return 2 if failed else 0


SWEEP_MANY_FAILED = 101  # sweep exit code: more than 100 points failed
SWEEP_NOT_RUN = 255  # sweep exit code: bad input or internal error


def _cmd_sweep(args: argparse.Namespace) -> int:
    from etr_sim.sweep.execute import make_executor

    # workers first: they import the simulator while this process loads and validates the sweep
    executor = make_executor(args.workers, args.scheduler, args.dask_local)
    cache = None
    try:
        from etr_sim.sweep import default_out_dir, load_sweep, run_sweep

        sweep = load_sweep(args.sweep)
        out = Path(args.out) if args.out else default_out_dir(sweep)
        print(f"{sweep.spec.name}: {len(sweep.points)} points x {len(sweep.router_labels)} routers "
              f"on {executor.description}; output {out}")
        cache = Path(args.cache) if args.cache else out / "points"
        outcome = run_sweep(sweep, executor, cache, progress=not args.no_progress)
    except KeyboardInterrupt:
        if cache is None:
            raise
        print(f"interrupted: finished points are cached in {cache}; run the same command again to resume",
              file=sys.stderr)
        return 130
    finally:
        executor.close()
    from etr_sim.report.sweep_plots import sweep_plots
    from etr_sim.sweep import write_tables

    write_tables(sweep, outcome, out)
    plot = sweep.spec.plot
    metric = args.metric or plot.metric
    metrics = [c for c in outcome.table.columns if c not in ("point", "router", "status", "error", "key",
                                                              *sweep.axis_columns)]
    if metrics and metric not in metrics:
        where = "--metric" if args.metric else f"{sweep.source}: plot.metric"
        print(f"error: {where}: not a metric of the results (got {metric!r}); choose from {', '.join(metrics)}",
              file=sys.stderr)
        return SWEEP_NOT_RUN
    files = sweep_plots(outcome.table, plot.axes or sweep.axis_columns, metric, out / "plots",
                        relative_to=plot.relative_to if args.metric is None else None, log_x=plot.log_x,
                        title=sweep.spec.name)
    print(f"points: {outcome.ran} run, {outcome.cached} from cache, {outcome.failed} failed, "
          f"{outcome.invalid} invalid (skipped), {outcome.redone_corrupt} corrupt cache file(s) redone")
    for _, row in outcome.points[outcome.points.status == "failed"].iterrows():
        first = str(row.error).splitlines()[0] if row.error else ""
        print(f"  failed point {row.point}: {first}", file=sys.stderr)
    print(f"results: {out / 'results.parquet'} (+ .csv); plots: {', '.join(str(f) for f in files) or 'none'}")
    return min(outcome.failed, SWEEP_MANY_FAILED)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _cmd_topo_show(args: argparse.Namespace) -> int:
    from etr_sim.config import load_topology
    from etr_sim.config.load import find_topology
    from etr_sim.errors import ConfigError, problem
    from etr_sim.topology import build_topology
    from etr_sim.topology.describe import describe

    path = Path(args.topology)
    if not path.is_file():
        found = find_topology(args.topology, None)
        if found is None:
            from etr_sim.config.load import library_topologies

            raise ConfigError(args.topology, problem("", f"no such file or library topology; library has: "
                                                         f"{', '.join(library_topologies())}", args.topology))
        path = found
    topo = build_topology(load_topology(path, args.nodes), str(path))
    d = describe(topo)
    print(f"{d['name']} ({path}): {d['gpus']} GPUs = {d['nodes']} nodes x {d['gpus_per_node']}, "
          f"scale-up {d['scale_up']}, fabric {d['fabric']}, {d['links']} directed links")
    print(f"  per GPU scale-up : {d['per_gpu_scale_up_Bps'] / 1e9:8.1f} GB/s raw, "
          f"{d['per_gpu_scale_up_effective_Bps'] / 1e9:8.1f} GB/s effective")
    print(f"  per GPU scale-out: {d['per_gpu_scale_out_Bps'] / 1e9:8.1f} GB/s raw, "
          f"{d['per_gpu_scale_out_effective_Bps'] / 1e9:8.1f} GB/s effective")
    print(f"  bisection        : {d['bisection_Bps'] / 1e9:8.1f} GB/s effective")
    print("  links by class:")
    for cls, c in d["link_classes"].items():
        bw = ", ".join(f"{b / 1e9:g}" for b in c["raw_Bps"])
        print(f"    {cls:12s} {c['links']:7d} links  {bw} GB/s raw")
    if args.png:
        from etr_sim.report.topology_plot import draw_topology

        draw_topology(topo, Path(args.png))
        print(f"  drawing: {args.png}")
    return 0


def _cmd_capture(args: argparse.Namespace) -> int:
    from etr_sim.activations.capture import capture_model_dir

    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    out = capture_model_dir(
        args.model_dir, args.text, args.out, layers=layers, max_tokens=args.max_tokens, seq_len=args.seq_len,
        batch_size=args.batch_size, store_dtype=args.dtype, overwrite=args.overwrite,
    )
    print(f"capture: {out}")
    return 0


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


def _cmd_theory(args: argparse.Namespace) -> int:
    from etr_sim.report.theory import write_theory

    out = write_theory(Path(args.out), trials=args.trials, seed=args.seed)
    print(f"capacity theory written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="etr-sim", description="MoE all-to-all cluster simulator (ETR vs TCR vs ECR)")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a scenario and write its report")
    r.add_argument("scenario", help="scenario YAML file")
    r.add_argument("--out", help="report folder (default reports/<scenario>/<run-id>)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.add_argument("--max-memory", help="refuse to run if the estimated peak memory exceeds this (e.g. 2GB, 512MiB); "
                                        "the machine's available memory always applies")
    r.add_argument("--quick", action="store_true",
                   help="a reduced run (same cluster and routers, far fewer tokens and layers) to check a scenario fast")
    r.set_defaults(func=_cmd_run)
    v = sub.add_parser("validate", help="check scenario, topology or sweep files without running them")
    v.add_argument("files", nargs="+")
    v.set_defaults(func=_cmd_validate)
    w = sub.add_parser("sweep", help="run a grid of scenarios (cached, resumable); exit code = number of failed points")
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
    w.set_defaults(func=_cmd_sweep, error_exit=SWEEP_NOT_RUN)
    t = sub.add_parser("topo", help="inspect topologies")
    tsub = t.add_subparsers(dest="topo_command", required=True)
    ts = tsub.add_parser("show", help="GPUs, nodes, links by class, per-GPU and bisection bandwidth")
    ts.add_argument("topology", help="library name (topologies/NAME.yaml) or a YAML file")
    ts.add_argument("--nodes", type=int, help="cluster size (number of nodes)")
    ts.add_argument("--png", help="also draw the graph to this PNG file")
    ts.set_defaults(func=_cmd_topo_show)
    cap = sub.add_parser("capture", help="record router inputs of a local Hugging Face model on a text")
    cap.add_argument("model_dir", help="local model folder with config.json (nothing is downloaded)")
    cap.add_argument("--text", required=True, help="UTF-8 text file; each blank-line separated paragraph is a sequence")
    cap.add_argument("--out", required=True, help="capture folder to create")
    cap.add_argument("--layers", help="comma-separated block indices (default: every MoE / FFN block)")
    cap.add_argument("--max-tokens", type=int, help="stop after this many tokens (whole sequences)")
    cap.add_argument("--seq-len", type=int, default=128, help="longest sequence in tokens; longer paragraphs are split")
    cap.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass and per shard (bounds memory)")
    cap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="stored dtype")
    cap.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    cap.set_defaults(func=_cmd_capture)
    c = sub.add_parser("compare", help="put several run folders side by side")
    c.add_argument("runs", nargs="+", help="run folders (reports/<scenario>/<run-id>)")
    c.add_argument("--csv", help="also write the combined table here")
    c.set_defaults(func=_cmd_compare)
    sc = sub.add_parser("schema", help="print the JSON Schema of scenario or topology files")
    sc.add_argument("kind", choices=["scenario", "topology"])
    sc.set_defaults(func=_cmd_schema)
    t = sub.add_parser("theory", help="LocMoE/ETR capacity theory: bound table, Theorem 5 Monte-Carlo, plot")
    t.add_argument("--out", default="reports/theory", help="output folder (default reports/theory)")
    t.add_argument("--trials", type=int, default=2000, help="Monte-Carlo trials per clustering strength")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_cmd_theory)
    return p


def _terminate(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on a usage error: for sweep, 2 means two failed points
        words = sys.argv[1:] if argv is None else argv
        if exc.code == 2 and next((w for w in words if not w.startswith("-")), None) == "sweep":
            return SWEEP_NOT_RUN
        raise
    previous = signal.signal(signal.SIGTERM, _terminate)  # SIGTERM cleans up like Ctrl-C
    try:
        return args.func(args)
    except InternalError as exc:
        print(f"etr-sim internal error (please report): {exc}", file=sys.stderr)
        return getattr(args, "error_exit", 1)
    except EtrSimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(args, "error_exit", 2)
    except KeyboardInterrupt as exc:
        where = getattr(exc, "where", "")
        print(f"interrupted {where}" if where else "interrupted: no report was written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
