"""Benchmark: one dispatch all-to-all of a skewed matrix from a real router decision on dgx-h100.

Usage: python benchmarks/bench_network.py --gpus 1024 [--algorithm direct] [--coalesce 0.01]
Prints one JSON line: gpus, flows, wall_s (planning + simulation), plan_s, sim_s, peak_rss_bytes,
sim_time_s, recomputations, setup_s (routing; not part of wall_s).

Traffic: N GPUs x 4096 tokens, N experts (one per GPU, EP = N), dropless token choice top-8 over a
seeded random gate on synthetic clustered activations (popularity skew 1.0): hot experts are hot
for every source. The router runs on one block of GPUs and the decision is tiled over the others
(same seeded tokens per block), which keeps the set-up memory bounded at N = 4096.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def skewed_matrix(gpus: int, gpus_per_node: int, tokens: int, top_k: int, seed: int, block: int):
    from etr_sim.activations import make_batch
    from etr_sim.config.scenario import ModelSpec, SyntheticActivations, TokenChoiceRouter
    from etr_sim.routing import make_router
    from etr_sim.traffic.matrix import TrafficMatrix
    from etr_sim.units import row_bytes

    block = min(block, gpus)
    model = ModelSpec(hidden_size=7168, num_experts=gpus, top_k=top_k, dispatch_dtype="fp8")
    acts = SyntheticActivations(kind="synthetic", hidden_size=32, num_clusters=64, cluster_strength=0.5,
                                popularity_skew=1.0)
    router = make_router(TokenChoiceRouter(kind="token_choice", capacity_factor=None, padded=False), model,
                         gpus, acts.hidden_size, seed)
    batch = make_batch(acts, tokens, np.arange(block) // gpus_per_node, seed)
    dec = router.route(batch)
    pair = np.unique(dec.token * gpus + dec.expert)  # one row per (token, destination GPU)
    src_local, dst = batch.src_gpu[pair // gpus], pair % gpus
    rows_block = np.bincount(src_local * gpus + dst, minlength=block * gpus).reshape(block, gpus)
    rows = np.tile(rows_block, (gpus // block, 1)).astype(np.int64)  # [G, G]
    rb = row_bytes(model.hidden_size, model.dispatch_dtype)
    return TrafficMatrix("dispatch", rows * rb, rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, required=True)
    ap.add_argument("--algorithm", default="direct")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--coalesce", type=float, default=0.01)
    ap.add_argument("--rate-tol", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import simpy

    from etr_sim.config import load_topology
    from etr_sim.sim.flownet import FlowNetwork
    from etr_sim.topology import build_topology
    from etr_sim.traffic.collectives import plan_collective

    root = Path(__file__).resolve().parents[1]
    t0 = time.perf_counter()
    spec = load_topology(root / "topologies" / "dgx-h100.yaml", nodes=max(args.gpus // 8, 1))
    topo = build_topology(spec)
    matrix = skewed_matrix(topo.num_gpus, topo.gpus_per_node, args.tokens, args.top_k, args.seed, block=16)
    setup_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    plan = plan_collective(args.algorithm, matrix, topo)
    del matrix
    t2 = time.perf_counter()
    env = simpy.Environment()
    net = FlowNetwork(env, topo.capacity_Bps, topo.latency_s, topo.message_overhead_s, args.coalesce, args.rate_tol)

    def run():
        for stage in plan.stages:
            yield net.transfer(stage.size_bytes, stage.offsets, stage.links)

    env.process(run())
    env.run()
    t3 = time.perf_counter()
    print(json.dumps({
        "gpus": topo.num_gpus, "flows": plan.num_flows, "wall_s": round(t3 - t1, 3), "plan_s": round(t2 - t1, 3),
        "sim_s": round(t3 - t2, 3), "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "sim_time_s": env.now, "recomputations": net.recomputations, "setup_s": round(setup_s, 3),
        "algorithm": args.algorithm, "coalesce_rel": args.coalesce, "rate_tol_rel": args.rate_tol,
    }))


if __name__ == "__main__":
    main()
