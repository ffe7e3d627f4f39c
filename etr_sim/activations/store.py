"""The capture format on disk: safetensors shards plus a ``capture.json`` index.

A capture folder holds
  capture.json              format, model, hidden size, stored dtype, layers, sequence offsets, shards
  shard-00000.safetensors   one per forward batch (memory stays bounded by the batch):
      hidden.layer{L}         [n, d]  router input (MoE) or FFN input (dense) of layer L
      router_logits.layer{L}  [n, E]  the model's own router logits (MoE layers only), float32
      token_ids               [n]     int64 vocabulary ids
      position                [n]     int64 position of the token in its sequence
      sequence                [n]     int64 global sequence number
  router.safetensors        router_weight.layer{L} [E, d] of every captured MoE layer
Tokens are stored sequence after sequence; ``sequence_offsets`` [S + 1] in capture.json gives the
boundaries. A capture is written into a hidden temporary folder and renamed into place only when
complete, so a failed capture leaves no half-written shard set.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from etr_sim.config.capture_meta import CAPTURE_FORMAT, CAPTURE_INDEX
from etr_sim.errors import ConfigError, problem

ROUTER_FILE = "router.safetensors"


class CaptureWriter:
    """Streams batches of captured tensors to shards in a temporary folder; ``commit`` publishes it.

    Use as a context manager: leaving the block with an exception deletes the temporary folder.
    """

    def __init__(self, out: str | Path, overwrite: bool = False):
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise ConfigError(str(self.out), problem("--out", "already exists (pass overwrite to replace it)", str(self.out)))
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        self.shards: list[dict] = []
        self.offsets: list[int] = [0]
        self.router_weights: dict[str, torch.Tensor] = {}
        self.committed = False

    def __enter__(self) -> "CaptureWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def num_tokens(self) -> int:
        return self.offsets[-1]

    def add_batch(self, tensors: dict[str, torch.Tensor], seq_lengths: list[int]) -> None:
        """Write one shard. ``tensors`` holds hidden.layer{L} [n, d], token_ids [n], ... for sum(seq_lengths) tokens."""
        n = sum(seq_lengths)
        first_seq = len(self.offsets) - 1
        for length in seq_lengths:
            self.offsets.append(self.offsets[-1] + length)
        seq = torch.repeat_interleave(torch.arange(first_seq, first_seq + len(seq_lengths)), torch.tensor(seq_lengths))
        tensors = {**tensors, "sequence": seq.to(torch.int64)}
        for name, t in tensors.items():
            assert t.shape[0] == n, f"{name} has {t.shape[0]} rows, expected {n}"
        name = f"shard-{len(self.shards):05d}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(self.tmp / name))
        self.shards.append({"file": name, "tokens": n, "sequences": len(seq_lengths)})

    def commit(self, meta: dict) -> Path:
        """Write router weights and capture.json, then move the folder into place atomically."""
        if self.router_weights:
            save_file({k: v.contiguous() for k, v in self.router_weights.items()}, str(self.tmp / ROUTER_FILE))
        index = {
            "format": CAPTURE_FORMAT,
            **meta,
            "num_tokens": self.num_tokens,
            "num_sequences": len(self.offsets) - 1,
            "sequence_offsets": self.offsets,
            "shards": self.shards,
        }
        (self.tmp / CAPTURE_INDEX).write_text(json.dumps(index, indent=1) + "\n")
        old = None
        if self.out.exists():  # overwrite: keep the old one until the new one is in place
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            os.rename(self.out, old)
        os.rename(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.committed = True
        return self.out


@dataclass(frozen=True)
class Capture:
    """A capture loaded in memory.

    hidden:        {layer: [N, d]} in the stored dtype (float32/float16/bfloat16; callers convert rows)
    router_logits: {layer: [N, E] float32} (MoE layers only)
    router_weight: {layer: [E, d] float32} (MoE layers only)
    token_ids, position, sequence: [N] int64
    offsets: [S + 1] int64 sequence boundaries
    """

    folder: Path
    meta: dict
    hidden: dict[int, torch.Tensor]
    token_ids: np.ndarray
    position: np.ndarray
    sequence: np.ndarray
    offsets: np.ndarray
    router_logits: dict[int, torch.Tensor] = field(default_factory=dict)
    router_weight: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return int(self.meta["hidden_size"])

    @property
    def layers(self) -> list[int]:
        return [int(x["layer"]) for x in self.meta["layers"]]


def _load(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except FileNotFoundError:
        raise ConfigError(str(file), problem("", "shard listed in capture.json is missing")) from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(str(file), problem("", f"cannot read safetensors file: {exc}")) from None


def load_capture(folder: str | Path, layers: list[int] | None = None) -> Capture:
    """Read a capture folder (only ``layers`` when given). Problems raise ConfigError naming the file."""
    folder = Path(folder)
    index_file = folder / CAPTURE_INDEX
    try:
        meta = json.loads(index_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(index_file), problem("", "missing: not a capture folder made by etr-sim capture")) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(str(index_file), problem("", f"cannot read: {exc}")) from None
    have = [int(x["layer"]) for x in meta.get("layers", [])]
    want = have if layers is None else list(layers)
    missing = [x for x in want if x not in have]
    if missing:
        raise ConfigError(str(index_file), problem("layers", f"layer(s) {missing} were not captured", have))
    d = int(meta["hidden_size"])
    parts: dict[str, list[torch.Tensor]] = {}
    problems = []
    for i, shard in enumerate(meta["shards"]):
        tensors = _load(folder / shard["file"])
        for name in ["token_ids", "position", "sequence"] + [f"hidden.layer{x}" for x in want]:
            if name not in tensors:
                problems.append(problem(f"shards[{i}]", f"{shard['file']} has no tensor {name!r}", shard["file"]))
                continue
            t = tensors[name]
            if name.startswith("hidden.") and (t.dim() != 2 or t.shape[1] != d or t.shape[0] != shard["tokens"]):
                problems.append(
                    problem(f"shards[{i}]", f"{name} has shape {tuple(t.shape)}, expected [{shard['tokens']}, {d}]", shard["file"])
                )
                continue
            parts.setdefault(name, []).append(t)
        for x in want:
            if f"router_logits.layer{x}" in tensors:
                parts.setdefault(f"router_logits.layer{x}", []).append(tensors[f"router_logits.layer{x}"])
    if problems:
        raise ConfigError(str(index_file), problems)
    cat = {k: torch.cat(v) for k, v in parts.items()}
    offsets = np.asarray(meta["sequence_offsets"], dtype=np.int64)
    if offsets[-1] != cat["token_ids"].shape[0]:
        raise ConfigError(
            str(index_file), problem("sequence_offsets", f"ends at {offsets[-1]} but the shards hold {cat['token_ids'].shape[0]} tokens")
        )
    weights: dict[int, torch.Tensor] = {}
    if (folder / ROUTER_FILE).exists():
        w = _load(folder / ROUTER_FILE)
        weights = {x: w[f"router_weight.layer{x}"].float() for x in want if f"router_weight.layer{x}" in w}
    return Capture(
        folder=folder,
        meta=meta,
        hidden={x: cat[f"hidden.layer{x}"] for x in want},
        token_ids=cat["token_ids"].numpy(),
        position=cat["position"].numpy(),
        sequence=cat["sequence"].numpy(),
        offsets=offsets,
        router_logits={x: cat[f"router_logits.layer{x}"].float() for x in want if f"router_logits.layer{x}" in cat},
        router_weight=weights,
    )
