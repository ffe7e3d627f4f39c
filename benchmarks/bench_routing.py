"""Routing throughput: stream N tokens (default 1,048,576, d = 4096, bf16, 64 experts) through every router.

Tokens are never held all at once: a pool of a few distinct bf16 chunks (clustered Gaussian
features, so the routers see structure) is generated once, and the stream cycles through it, each
chunk carrying its own GPUs (whole capacity groups) and positions. For each router the script
prints one JSON line:
    router, tokens, seconds, tokens_per_s, read_s, ratio_to_read, ratios, warmup_s, peak_rss_bytes
ratio_to_read = router time / time of one pass reading the same chunks (torch.sum over each bf16
chunk): the physical floor. Each router first routes one chunk untimed (warmup_s: lazy imports
such as numba's kernel, first-call costs); then, --repeat times, the read pass is timed and a fresh
router of the same spec streams all chunks right after it. Each pair gives one ratio (``ratios``);
the line reports the median pair (its seconds, read_s and ratio), since the memory bandwidth of a
shared machine drifts between and within runs. Routers with a linear gate (token_choice,
expert_choice, node_limited) also report gemm_s, one pass of the bare bf16 gate GEMM over the
chunks (a second, compute floor: 2 d E FLOP per 2 d bytes read), and ratio_to_floor = seconds /
max(read_s, gemm_s). peak_rss_bytes is the process's peak resident
set so far (ru_maxrss, monotone: later routers report at least the earlier peaks).

Usage: python benchmarks/bench_routing.py [--threads T] [--repeat R] [--tokens N] [--chunk-gpus G] [--routers etr,locmoe,...]
Targets (issue 3): ratio_to_read <= 3 for etr and locmoe, <= 5 for the others; peak RSS <= 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import TypeAdapter  # noqa: E402

from etr_sim.activations.batch import TokenBatch  # noqa: E402
from etr_sim.config.scenario import ModelSpec, RouterSpec  # noqa: E402
from etr_sim.routing import ExpertLocality, make_router  # noqa: E402

ROUTER_SPECS = {
    "token_choice": {"kind": "token_choice", "capacity_factor": 1.25},
    "expert_choice": {"kind": "expert_choice"},
    "etr": {"kind": "etr", "capacity": {"rule": "factor", "factor": 1.0}},
    "etr_dynamic": {"kind": "etr", "name": "etr_dynamic", "capacity": {"rule": "dynamic"}},
    "locmoe": {"kind": "locmoe"},
    "hash": {"kind": "hash"},
    "random_uniform": {"kind": "random_uniform"},
    "balanced": {"kind": "balanced"},
    "node_limited": {"kind": "node_limited", "max_nodes": 4},
}


def make_pool(pool: int, rows: int, d: int, seed: int) -> list[torch.Tensor]:
    """``pool`` bf16 chunks [rows, d]: 64 cluster centres + noise, cluster strength 0.5."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(64, d, generator=gen)
    out = []
    for _ in range(pool):
        x = torch.randn(rows, d, generator=gen).mul_(0.5**0.5)  # [rows, d] float32, freed below
        x.add_(centers[torch.randint(0, 64, (rows,), generator=gen)], alpha=0.5**0.5)
        out.append(x.to(torch.bfloat16))
        del x
    return out


def chunks(pool, n_chunks, tokens_per_gpu, gpus_per_chunk, gpus_per_node):
    for i in range(n_chunks):
        hidden = pool[i % len(pool)]
        gpu = np.repeat(np.arange(i * gpus_per_chunk, (i + 1) * gpus_per_chunk, dtype=np.int64), tokens_per_gpu)
        pos = np.tile(np.arange(tokens_per_gpu, dtype=np.int64), gpus_per_chunk)
        yield TokenBatch(hidden, gpu, gpu // gpus_per_node, pos, layer=0, step=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=1 << 20)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--tokens-per-gpu", type=int, default=4096)
    p.add_argument("--chunk-gpus", type=int, default=4, help="GPUs (capacity groups) per chunk")
    p.add_argument("--ep", type=int, default=64)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--pool", type=int, default=2, help="distinct chunks generated and cycled")
    p.add_argument("--routers", default=",".join(ROUTER_SPECS))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--repeat", type=int, default=3, help="timed (read, stream) pairs per router; the median is reported")
    args = p.parse_args()
    if args.repeat < 1:
        p.error(f"--repeat must be at least 1, got {args.repeat}")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = args.tokens_per_gpu * args.chunk_gpus
    n_chunks = args.tokens // rows
    pool = make_pool(args.pool, rows, args.hidden, seed=0)
    num_gpus = -(-n_chunks * args.chunk_gpus // args.ep) * args.ep
    locality = ExpertLocality.from_ranks(
        args.ep,
        np.arange(args.experts, dtype=np.int64) // (args.experts // args.ep),
        np.arange(num_gpus, dtype=np.int64) // args.gpus_per_node,
    )
    model = ModelSpec(hidden_size=args.hidden, num_experts=args.experts, top_k=args.top_k)
    adapter = TypeAdapter(RouterSpec)

    def read_pass() -> float:
        t0 = time.perf_counter()
        for b in chunks(pool, n_chunks, args.tokens_per_gpu, args.chunk_gpus, args.gpus_per_node):
            float(b.hidden.sum())
        return time.perf_counter() - t0

    def gemm_pass() -> float:
        """The compute floor of a linear gate: the bare bf16 [rows, d] x [d, E] GEMM over the stream."""
        w = torch.randn(args.hidden, args.experts).to(pool[0].dtype)
        t0 = time.perf_counter()
        for b in chunks(pool, n_chunks, args.tokens_per_gpu, args.chunk_gpus, args.gpus_per_node):
            b.hidden @ w
        return time.perf_counter() - t0

    read_pass()  # warm up
    for name in args.routers.split(","):
        router = make_router(adapter.validate_python(ROUTER_SPECS[name]), model, args.ep, args.hidden, 0, locality)
        # one-time costs of the process, not of the stream: the first call loads lazily imported
        # code (numba's GrAP kernel: import + cached machine code, ~0.5 s) and warms torch's kernels
        t0 = time.perf_counter()
        router.route(next(chunks(pool, 1, args.tokens_per_gpu, args.chunk_gpus, args.gpus_per_node)))
        warmup_s = time.perf_counter() - t0
        pairs = []  # (ratio, seconds, read_s, kept)
        for _ in range(args.repeat):
            read_s = read_pass()  # the floor, re-timed next to each stream (the machine is shared)
            router = make_router(adapter.validate_python(ROUTER_SPECS[name]), model, args.ep, args.hidden, 0, locality)
            kept = 0
            t0 = time.perf_counter()
            for b in chunks(pool, n_chunks, args.tokens_per_gpu, args.chunk_gpus, args.gpus_per_node):
                kept += router.route(b).num_kept
            sec = time.perf_counter() - t0
            pairs.append((sec / read_s, sec, read_s, kept))
        ratio, sec, read_s, kept = sorted(pairs)[(len(pairs) - 1) // 2]
        spec = adapter.validate_python(ROUTER_SPECS[name])
        floor = {}
        if getattr(spec, "gate", "grap") != "grap":  # a linear gate: its GEMM is a second, compute floor
            gemm_s = gemm_pass()
            floor = {"gemm_s": round(gemm_s, 3), "ratio_to_floor": round(sec / max(read_s, gemm_s), 2)}
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(
            json.dumps(
                {
                    "router": name,
                    "tokens": n_chunks * rows,
                    "seconds": round(sec, 3),
                    "tokens_per_s": round(n_chunks * rows / sec),
                    "read_s": round(read_s, 3),
                    "ratio_to_read": round(ratio, 2),
                    "ratios": [round(p[0], 2) for p in pairs],
                    **floor,
                    "warmup_s": round(warmup_s, 3),
                    "peak_rss_bytes": peak,
                    "kept_assignments": kept,
                    "threads": torch.get_num_threads(),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
