"""Benchmark: 64 small sweep points on 2 local workers vs the same points one after another.

Target (issue 7): pool time <= 0.6 x serial time. Each point is the quickstart setup made small
(2 nodes x 8 H100, 16 experts, EP16, 1 MoE layer, ``--seq-len`` tokens per GPU, three routers);
the 64 points are 8 NIC bandwidths x 8 seeds. Both runs start from an empty cache; the pool time
includes starting its worker processes (each imports torch). Prints the machine load (the CPU may
be shared) before and after.

    python benchmarks/bench_sweep.py [--seq-len 1024] [--workers 2] [--dask]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from etr_sim.sweep import DaskExecutor, PoolExecutor, SerialExecutor, load_sweep, run_sweep  # noqa: E402


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-len", type=int, default=1024, help="tokens per GPU in each point")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dask", action="store_true", help="also time a Dask LocalCluster of --workers workers")
    args = ap.parse_args()

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
    sweep = load_sweep(sweep_file)
    print(f"{len(sweep.points)} points, seq_len {args.seq_len}, {os.cpu_count()} CPUs; {load()}")

    t = time.perf_counter()
    serial = run_sweep(sweep, SerialExecutor(), tmp / "serial", progress=False)
    serial_s = time.perf_counter() - t
    print(f"serial (one process, one point after another): {serial_s:.1f} s  [{load()}]")

    t = time.perf_counter()
    pool = PoolExecutor(args.workers)
    try:
        pooled = run_sweep(sweep, pool, tmp / "pool", progress=False)
    finally:
        pool.close()
    pool_s = time.perf_counter() - t
    same = serial.table.equals(pooled.table)
    print(f"pool of {args.workers}: {pool_s:.1f} s = {pool_s / serial_s:.2f} x serial (target <= 0.60); "
          f"tables identical: {same}  [{load()}]")

    if args.dask:
        t = time.perf_counter()
        dask = DaskExecutor(local_workers=args.workers)
        try:
            dasked = run_sweep(sweep, dask, tmp / "dask", progress=False)
        finally:
            dask.close()
        dask_s = time.perf_counter() - t
        print(f"Dask LocalCluster of {args.workers}: {dask_s:.1f} s = {dask_s / serial_s:.2f} x serial; "
              f"tables identical: {serial.table.equals(dasked.table)}  [{load()}]")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
