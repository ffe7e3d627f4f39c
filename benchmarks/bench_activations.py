"""Activation sources: time to build router inputs and to capture (not a test; numbers vary with load).

    python benchmarks/bench_activations.py
Prints: captured-source batch time for the quickstart size (16 GPUs x 4096 tokens, MiniLM block 5,
first call includes loading the shards), synthetic batch time at the same size, and capture
throughput of a tiny random Mixtral (tokens/s, CPU).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from etr_sim.activations import make_batch  # noqa: E402
from etr_sim.config.scenario import CapturedActivations, SyntheticActivations  # noqa: E402


def timed(fn, repeat=3):
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    print(f"load average {os.getloadavg()}")
    gpu_node = np.repeat(np.arange(2), 8)
    cap = CapturedActivations(kind="captured", path="data/activations/minilm-l6-essays", layers=[5])
    t = timed(lambda: make_batch(cap, 4096, gpu_node, 0))
    print(f"captured batch 16 x 4096 x 384: first {t[0]*1e3:.0f} ms (loads shards), then {min(t[1:])*1e3:.0f} ms")
    syn = SyntheticActivations(kind="synthetic", hidden_size=384)
    t = timed(lambda: make_batch(syn, 4096, gpu_node, 0))
    print(f"synthetic batch 16 x 4096 x 384: {min(t)*1e3:.0f} ms")
    try:
        import transformers
    except ImportError:
        print("transformers not installed: capture benchmark skipped")
        return
    from etr_sim.activations.capture import capture

    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                     num_attention_heads=8, num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=2)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    seqs = [torch.randint(0, 1000, (256,)).tolist() for _ in range(32)]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        capture(model, seqs, Path(tmp) / "cap", batch_size=8, progress=False)
        dt = time.perf_counter() - t
    print(f"capture tiny Mixtral (d=256, 4 MoE layers), 8192 tokens: {dt:.2f} s = {8192 / dt:.0f} tokens/s")


if __name__ == "__main__":
    main()
