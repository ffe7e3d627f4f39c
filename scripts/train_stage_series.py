"""Reproduce data/activations/etr-stages: router inputs of a small ETR MoE LM at several training steps.

What runs (seeded, CPU, single thread, a few minutes):
- Data: data/text/etr-sim-essays.txt as UTF-8 bytes (vocabulary 256), random windows of
  ``--seq-len`` bytes; our own public-domain text.
- Model: byte embedding + learned positions, ``--layers`` pre-norm blocks of causal self-attention
  and an MoE FFN: ``--experts`` GELU experts (d -> 2d -> d). The router is ETR's GrAP gate: fixed
  (not trained) grouped-average-pooling weights, cosine affinity (ETR eq. 4). Each token nominates
  its top-1 expert (the paper's efficiency runs use l = 1); each expert keeps its best
  C = ceil(capacity_factor * tokens / experts) nominators by affinity; dropped tokens ride the
  residual. The kept token's output is scaled by softmax(affinity / temperature) of its expert,
  which is how gradients reach the router input (the gates themselves never change).
  Loss: next-byte cross-entropy + Switch auxiliary loss (alpha = 0.01, ETR/LocMoE).
- Capture: at each checkpoint step the model is run by ``etr_sim.activations.capture`` (our
  hooks find the GrAP router by structure) on the first ``--capture-seqs`` windows of the text
  (consecutive, non-overlapping), stored as float16. Per stage we compute the mean token-token
  correlation, the within-cluster correlation and the Calinski-Harabasz index (spherical k-means,
  k = ``--clusters`` = 32, the synthetic generator's default cluster count) and write them to stages.json.

    python scripts/train_stage_series.py            # ~2-4 min on a shared 2-core CPU
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from etr_sim.activations.capture import capture  # noqa: E402
from etr_sim.activations.stats import clustering_stats  # noqa: E402
from etr_sim.activations.store import load_capture  # noqa: E402
from etr_sim.routing.functional import grap_weight  # noqa: E402


class GrapGate(nn.Module):
    """Fixed GrAP router: weight [E, d] is n/d on expert i's block of d/n channels; output = cosine affinity."""

    def __init__(self, d: int, n: int):
        super().__init__()
        self.weight = nn.Parameter(grap_weight(d, n).T.contiguous(), requires_grad=False)  # [E, d]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h.reshape(-1, h.shape[-1])  # [N, d]
        w = self.weight
        return (h @ w.T) / (h.norm(dim=-1, keepdim=True).clamp_min(1e-6) * w.norm(dim=-1))  # [N, E]


class EtrMoe(nn.Module):
    def __init__(self, d: int, n: int, capacity_factor: float, temperature: float):
        super().__init__()
        self.gate = GrapGate(d, n)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)) for _ in range(n))
        self.n, self.cf, self.tau = n, capacity_factor, temperature
        self.aux = torch.zeros(())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        shape = h.shape
        x = h.reshape(-1, shape[-1])  # [N, d]
        aff = self.gate(x)  # [N, E]
        probs = torch.softmax(aff / self.tau, dim=-1)  # [N, E]
        nominee = aff.argmax(dim=-1)  # [N] top-1 nomination (TCR side)
        cap = math.ceil(self.cf * x.shape[0] / self.n)
        out = torch.zeros_like(x)
        for e in range(self.n):
            cand = torch.nonzero(nominee == e).squeeze(1)  # [n_e]
            if cand.numel() == 0:
                continue
            keep = cand[aff[cand, e].argsort(descending=True)[:cap]]  # ECR side: best C nominators
            out[keep] = self.experts[e](x[keep]) * probs[keep, e : e + 1]
        frac = torch.bincount(nominee, minlength=self.n).float() / x.shape[0]
        self.aux = self.n * (frac * probs.mean(dim=0)).sum()
        return out.reshape(shape)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, n: int, cf: float, tau: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.moe = EtrMoe(d, n, cf, tau)

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        a = self.ln1(x)
        x = x + self.attn(a, a, a, attn_mask=causal, need_weights=False)[0]
        return x + self.moe(self.ln2(x))  # router input = ln2(x)


class TinyEtrLM(nn.Module):
    def __init__(self, d: int, layers: int, heads: int, n: int, seq_len: int, cf: float, tau: float):
        super().__init__()
        self.emb, self.pos = nn.Embedding(256, d), nn.Embedding(seq_len, d)
        self.blocks = nn.ModuleList(Block(d, heads, n, cf, tau) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, 256)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        t = ids.shape[1]
        causal = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        x = self.emb(ids) + self.pos(torch.arange(t))
        for b in self.blocks:
            x = b(x, causal)
        return self.head(self.ln(x))

    def aux_loss(self) -> torch.Tensor:
        return sum(b.moe.aux for b in self.blocks)


def _repo_relative(path: Path) -> str:
    """The output folder relative to the repository (no machine-specific absolute path in shipped data)."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, nargs="+", default=[0, 20, 50, 200, 1000])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--capacity-factor", type=float, default=1.25)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--aux-alpha", type=float, default=0.01)
    p.add_argument("--capture-seqs", type=int, default=16)
    p.add_argument("--clusters", type=int, default=32, help="k of the k-means behind the CH index (synthetic default)")
    p.add_argument("--out", default=str(ROOT / "data" / "activations" / "etr-stages"))
    args = p.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    text_file = ROOT / "data" / "text" / "etr-sim-essays.txt"
    data = torch.tensor(list(text_file.read_bytes()), dtype=torch.long)  # [bytes]
    model = TinyEtrLM(args.d, args.layers, args.heads, args.experts, args.seq_len, args.capacity_factor, args.temperature)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed + 1)
    capture_seqs = [data[i * args.seq_len : (i + 1) * args.seq_len].tolist() for i in range(args.capture_seqs)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages, t0, step, loss_val = [], time.time(), 0, None
    for target in sorted(args.steps):
        while step < target:
            model.train()
            start = torch.randint(0, len(data) - args.seq_len - 1, (args.batch,), generator=gen)
            batch = torch.stack([data[s : s + args.seq_len + 1] for s in start])  # [B, T + 1]
            logits = model(batch[:, :-1])  # [B, T, 256]
            loss = F.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
            total = loss + args.aux_alpha * model.aux_loss()
            opt.zero_grad()
            total.backward()
            opt.step()
            step += 1
            loss_val = float(loss.detach())
        folder = out / f"step{step:05d}"
        capture(
            model, capture_seqs, folder, batch_size=8, store_dtype="float16", progress=False, overwrite=True,
            forward=lambda m, ids, mask: m(ids),
            meta={
                "model": {"name": "etr-sim tiny ETR MoE byte LM", "class": "TinyEtrLM", "router": "GrAP (fixed), cosine affinity",
                          "d": args.d, "layers": args.layers, "experts": args.experts},
                "text": {"file": text_file.name, "unit": "utf-8 bytes", "seq_len": args.seq_len},
                "stage": {"step": step, "train_loss": loss_val},
            },
        )
        cap = load_capture(folder)
        per_layer = {str(x): clustering_stats(cap.hidden[x], cap.offsets, args.clusters, args.seed) for x in cap.layers}
        keys = ("mean_token_correlation", "within_cluster_correlation", "calinski_harabasz")
        avg = {k: sum(v[k] for v in per_layer.values()) / len(per_layer) for k in keys}
        stages.append({"step": step, "path": folder.name, "train_loss": loss_val, **avg, "per_layer": per_layer})
        print(f"step {step:5d}  loss {loss_val or float('nan'):.3f}  corr {avg['mean_token_correlation']:.3f}  "
              f"within {avg['within_cluster_correlation']:.3f}  CH {avg['calinski_harabasz']:.1f}  "
              f"({time.time() - t0:.0f} s)", flush=True)
    (out / "stages.json").write_text(json.dumps({"description": __doc__.split("\n")[0], "args": {**vars(args), "out": _repo_relative(out)}, "stages": stages}, indent=1) + "\n")


if __name__ == "__main__":
    main()
