"""Benchmark: 64 small sweep points on 2 local workers vs the same points one after another.

Target (issue 7): pool time <= 0.6 x serial time. Each point is the quickstart setup made small
(2 nodes x 8 H100, 16 experts, EP16, ``--seq-len`` tokens per GPU, three routers); the 64 points
are 8 NIC bandwidths x 8 seeds. Every timed run starts from an empty cache in a fresh child process
(so each pays its own imports, as a user's command would); the pool time includes starting its
workers. The CPU may be shared with other jobs, so the modes are interleaved ``--repeat`` times and
the best and median of each are reported with the load average. Serial runs twice per repetition:
with torch's default thread count and with one thread; the faster is the baseline.

    python benchmarks/bench_sweep.py [--seq-len 4096] [--workers 2] [--repeat 3] [--dask]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

# One timed sweep in a fresh interpreter: prints "<seconds> <sum of point seconds>", leaves the table.
CHILD = """
import sys, time
t = time.perf_counter()
from etr_sim.sweep.execute import make_executor
sweep_file, mode, n, cache, table = sys.argv[1:6]
n = int(n)
# the order of etr-sim sweep: workers start first, then this process loads the sweep
ex = make_executor(workers=n if mode == "pool" else 1, dask_local=n if mode == "dask" else None,
                   torch_threads=1 if mode == "serial1" else None)
try:
    from etr_sim.sweep import load_sweep, run_sweep
    out = run_sweep(load_sweep(sweep_file), ex, cache, progress=False)
finally:
    ex.close()
out.table.to_parquet(table)
print(time.perf_counter() - t, out.points.elapsed_s.sum(), out.failed)
"""


SPIN = "import time\nt = time.perf_counter()\nx = 0\nfor i in range(15_000_000):\n    x += i\nprint(time.perf_counter() - t)"


def parallel_capacity(workers: int) -> float:
    """How many cores' worth of pure-Python work ``workers`` concurrent processes get right now
    (workers x time alone / time together; = workers on an idle machine with that many cores)."""
    alone = float(subprocess.run([sys.executable, "-c", SPIN], capture_output=True, text=True).stdout)
    procs = [subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    together = max(float(p.communicate()[0]) for p in procs)
    return workers * alone / together


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def timed(sweep_file: Path, mode: str, workers: int, tmp: Path, tag: str) -> tuple[float, float, Path]:
    table = tmp / f"{tag}.parquet"
    res = subprocess.run([sys.executable, "-c", CHILD, str(sweep_file), mode, str(workers), str(tmp / f"cache-{tag}"),
                          str(table)], cwd=REPO, capture_output=True, text=True, check=True)
    wall, points, failed = res.stdout.split()
    assert int(failed) == 0, res.stderr
    return float(wall), float(points), table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-len", type=int, default=4096, help="tokens per GPU in each point (4096: the quickstart as shipped)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repetitions of each mode")
    ap.add_argument("--dask", action="store_true", help="also time a Dask LocalCluster of --workers workers")
    args = ap.parse_args()

    import pandas as pd

    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    sweep_file = tmp / "bench.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "bench",
        "scenario": str(REPO / "scenarios" / "quickstart.yaml"),
        "set": {"parallelism.seq_len": args.seq_len},
        "axes": [
            {"path": "topology.overrides.node.nic.bandwidth_gbps", "name": "nic_gbps",
             "values": [100, 150, 200, 250, 300, 400, 600, 800]},
            {"path": "seed", "values": list(range(8))},
        ],
    }))
    # serial: torch's default threads (all cores); serial1: one torch thread, as each pool worker
    # gets here. The baseline is whichever serial run is faster, so the ratio never flatters the pool.
    modes = ["serial", "serial1", "pool"] + (["dask"] if args.dask else [])
    print(f"64 points, seq_len {args.seq_len}, {os.cpu_count()} CPUs, {args.workers} workers; {load()}")
    cap = parallel_capacity(args.workers)
    print(f"CPU check: {args.workers} concurrent processes get {cap:.2f} cores' worth of work right now "
          f"(best possible pool ratio ~{1 / cap:.2f} before start-up costs)")
    walls: dict[str, list[float]] = {m: [] for m in modes}
    tables: dict[str, Path] = {}
    for rep in range(args.repeat):
        for mode in modes:
            wall, pts, tables[mode] = timed(sweep_file, mode, args.workers, tmp, f"{mode}{rep}")
            walls[mode].append(wall)
            print(f"  run {rep} {mode:7s}: {wall:6.1f} s wall, sum of point times {pts:6.1f} s  [{load()}]")
    ref = pd.read_parquet(tables["serial"])
    same = all(ref.equals(pd.read_parquet(tables[m])) for m in modes)
    serial_mode = min(("serial", "serial1"), key=lambda m: statistics.median(walls[m]))
    best_serial, med_serial = min(walls[serial_mode]), statistics.median(walls[serial_mode])
    print(f"baseline: {serial_mode} (median {med_serial:.1f} s; the other serial mode median "
          f"{statistics.median(walls['serial1' if serial_mode == 'serial' else 'serial']):.1f} s)")
    for mode in modes[2:]:
        print(f"{mode}: best {min(walls[mode]):.1f} s = {min(walls[mode]) / best_serial:.2f} x best serial "
              f"({best_serial:.1f} s); median {statistics.median(walls[mode]):.1f} s = "
              f"{statistics.median(walls[mode]) / med_serial:.2f} x median serial (target <= 0.60)")
    print(f"tables identical across modes: {same}; {load()}; CPU check now: {parallel_capacity(args.workers):.2f} cores")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
