"""Capture router inputs from a torch model with forward hooks.

Where the hooks go (found by structure, not by class name):
- MoE blocks: a module with an ``experts`` child and a router child (``gate`` or ``router``) that
  holds a 2-D ``weight`` [E, d] with E > 1. This matches the Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE
  and DeepSeek-V2/V3 blocks of ``transformers``. The router's input is the captured tensor and its
  output (the logits, or the first element of a (logits, ...) tuple) is the model's own router
  logits.
- Dense models (no MoE block): the input of each block's feed-forward child (``mlp``,
  ``feed_forward``, ``ffn`` or BERT's ``intermediate``), i.e. where a router would sit if the FFN
  were made an MoE layer.
The layer number is the index of the transformer block in the module path (``model.layers.3.mlp``).

Only non-padding tokens are kept; shards are written per forward batch, so memory is bounded by
``batch_size`` sequences. Hugging Face loading (``capture_model_dir``) imports ``transformers``
lazily: it is the optional ``capture`` extra.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from etr_sim.activations.store import CaptureWriter
from etr_sim.errors import ConfigError, problem

DENSE_FFN_NAMES = ("mlp", "feed_forward", "ffn", "intermediate")
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class HookPoint:
    """One captured layer: ``module`` is hooked; its first positional input is the router input."""

    layer: int
    name: str
    module: nn.Module
    kind: str  # "moe_router" or "dense_ffn"
    num_experts: int | None = None
    top_k: int | None = None


def _block_index(name: str) -> int | None:
    nums = re.findall(r"(?:^|\.)(\d+)(?:\.|$)", name)
    return int(nums[-1]) if nums else None


def _router_child(module: nn.Module) -> tuple[str, nn.Module] | None:
    for child_name in ("gate", "router"):
        child = getattr(module, child_name, None)
        w = getattr(child, "weight", None)
        if isinstance(child, nn.Module) and isinstance(w, torch.Tensor) and w.dim() == 2 and w.shape[0] > 1:
            return child_name, child
    return None


def find_hook_points(model: nn.Module) -> list[HookPoint]:
    """MoE router inputs if the model has MoE blocks, else dense FFN inputs; sorted by layer."""
    moe, dense = [], []
    for name, module in model.named_modules():
        layer = _block_index(name)
        if layer is None:
            continue
        router = _router_child(module)
        if router is not None and isinstance(getattr(module, "experts", None), nn.Module):
            child_name, gate = router
            top_k = getattr(module, "top_k", None) or getattr(gate, "top_k", None)
            moe.append(HookPoint(layer, f"{name}.{child_name}", gate, "moe_router", int(gate.weight.shape[0]), top_k))
        elif name.rsplit(".", 1)[-1] in DENSE_FFN_NAMES and name.rsplit(".", 2)[-2].isdigit():
            dense.append(HookPoint(layer, name, module, "dense_ffn"))
    points = moe or dense
    seen: dict[int, HookPoint] = {}
    for p in points:
        seen.setdefault(p.layer, p)  # one point per block (the outermost match)
    return [seen[k] for k in sorted(seen)]


def _logits_of(output) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def capture(
    model: nn.Module,
    sequences: Iterable[Sequence[int]],
    out: str | Path,
    *,
    layers: list[int] | None = None,
    points: list[HookPoint] | None = None,
    batch_size: int = 8,
    store_dtype: str = "float32",
    meta: dict | None = None,
    forward: Callable[[nn.Module, torch.Tensor, torch.Tensor], object] | None = None,
    progress: bool = True,
    total_tokens: int | None = None,
    overwrite: bool = False,
    source: str | None = None,
) -> Path:
    """Run ``model`` over ``sequences`` (lists of token ids) and write a capture folder to ``out``.

    Args:
        layers: block indices to keep (default all found); an unknown index is a ConfigError.
        points: explicit hook points for models the structural search does not understand.
        batch_size: sequences per forward pass (and per shard): bounds memory.
        store_dtype: float32 / float16 / bfloat16 for the stored router inputs (logits stay float32).
        forward: how to call the model; default ``model(input_ids=..., attention_mask=...)``.
        source: what error messages name as the input (default: the model's class name).
    Returns the capture folder. On any exception the partial capture is deleted.
    """
    from tqdm import tqdm

    source = source or type(model).__name__
    points = points if points is not None else find_hook_points(model)
    if not points:
        raise ConfigError(source, problem("model", "found no MoE router or FFN block to hook"))
    if layers is not None:
        have = [p.layer for p in points]
        missing = [x for x in layers if x not in have]
        if missing:
            raise ConfigError(source, problem("--layers", f"model has layers {have}", missing))
        points = [p for p in points if p.layer in layers]
    if store_dtype not in STORE_DTYPES:
        raise ConfigError(source, problem("--dtype", f"choose one of {list(STORE_DTYPES)}", store_dtype))
    forward = forward or (lambda m, ids, mask: m(input_ids=ids, attention_mask=mask))
    hidden_sizes = {p.layer: None for p in points}

    got: dict[str, torch.Tensor] = {}

    def make_hook(p: HookPoint):
        def hook(module, args, output):
            x = args[0] if args else None
            got[f"hidden.layer{p.layer}"] = x.detach()
            if p.kind == "moe_router":
                logits = _logits_of(output)
                if logits is not None:
                    got[f"router_logits.layer{p.layer}"] = logits.detach()

        return hook

    handles = [p.module.register_forward_hook(make_hook(p)) for p in points]
    model_was_training = model.training
    model.eval()
    try:
        with CaptureWriter(out, overwrite=overwrite) as writer, torch.no_grad():
            bar = tqdm(total=total_tokens, unit="tok", desc="capture", disable=not progress)
            for batch in _batches(sequences, batch_size):
                lengths = [len(s) for s in batch]
                t = max(lengths)
                ids = torch.zeros(len(batch), t, dtype=torch.long)  # [B, T] right-padded
                mask = torch.zeros(len(batch), t, dtype=torch.long)
                for i, s in enumerate(batch):
                    ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
                    mask[i, : len(s)] = 1
                got.clear()
                forward(model, ids, mask)
                keep = mask.reshape(-1).bool()  # [B*T]
                tensors = {
                    "token_ids": ids.reshape(-1)[keep],
                    "position": torch.arange(t).repeat(len(batch))[keep],
                }
                for p in points:
                    key = f"hidden.layer{p.layer}"
                    if key not in got:
                        raise ConfigError(p.name, problem("forward", "the hooked module was not called by the forward pass"))
                    x = got[key].reshape(-1, got[key].shape[-1])  # [B*T, d]
                    if x.shape[0] != keep.shape[0]:
                        raise ConfigError(p.name, problem("hidden", f"router input has {x.shape[0]} rows, expected B*T={keep.shape[0]}"))
                    hidden_sizes[p.layer] = x.shape[1]
                    tensors[key] = x[keep].to(STORE_DTYPES[store_dtype])
                    lk = f"router_logits.layer{p.layer}"
                    if lk in got:
                        tensors[lk] = got[lk].reshape(x.shape[0], -1)[keep].float()
                writer.add_batch(tensors, lengths)
                bar.update(sum(lengths))
            bar.close()
            if writer.num_tokens == 0:
                raise ConfigError(str(out), problem("--text", "no tokens to capture"))
            sizes = set(hidden_sizes.values())
            if len(sizes) != 1:
                raise ConfigError(str(out), problem("--layers", f"captured layers differ in width {hidden_sizes}; capture them separately"))
            for p in points:
                if p.kind == "moe_router":
                    writer.router_weights[f"router_weight.layer{p.layer}"] = p.module.weight.detach().float().cpu()
            return writer.commit(
                {
                    **(meta or {}),
                    "hidden_size": sizes.pop(),
                    "dtype": store_dtype,
                    "point": points[0].kind,
                    "layers": [
                        {
                            "layer": p.layer,
                            "module": p.name,
                            "kind": p.kind,
                            "num_experts": p.num_experts,
                            "top_k": p.top_k,
                            "router_logits": p.kind == "moe_router",
                        }
                        for p in points
                    ],
                }
            )
    finally:
        for h in handles:
            h.remove()
        model.train(model_was_training)


def _batches(sequences: Iterable[Sequence[int]], size: int):
    batch: list[Sequence[int]] = []
    for s in sequences:
        if len(s) == 0:
            continue
        batch.append(s)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def split_text(text: str, tokenizer, seq_len: int, max_tokens: int | None = None) -> list[list[int]]:
    """Token-id sequences from ``text``: each paragraph (blank-line separated) is one sequence,
    cut into pieces of at most ``seq_len`` tokens including the model's special tokens."""
    prefix, suffix = _special_tokens(tokenizer)
    room = seq_len - len(prefix) - len(suffix)
    if room < 1:
        raise ConfigError("--seq-len", problem("--seq-len", "too small for the model's special tokens", seq_len))
    out, total = [], 0
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if not para:
            continue
        ids = tokenizer(para, add_special_tokens=False)["input_ids"]
        for i in range(0, len(ids), room):
            seq = prefix + list(ids[i : i + room]) + suffix
            if max_tokens is not None and total + len(seq) > max_tokens:
                return out
            out.append(seq)
            total += len(seq)
    return out


def _special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single sequence (e.g. BERT's [CLS] ... [SEP])."""
    inner = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(inner) + 1):
        if full[i : i + len(inner)] == inner:
            return list(full[:i]), list(full[i + len(inner) :])
    return [], []


def capture_model_dir(
    model_dir: str | Path,
    text_file: str | Path,
    out: str | Path,
    *,
    layers: list[int] | None = None,
    max_tokens: int | None = None,
    seq_len: int = 128,
    batch_size: int = 8,
    store_dtype: str = "float32",
    progress: bool = True,
    overwrite: bool = False,
    model_name: str | None = None,
) -> Path:
    """Load a local Hugging Face model folder (no download) and capture it on the text of ``text_file``."""
    model_dir, text_file = Path(model_dir), Path(text_file)
    problems = []
    if not model_dir.is_dir():
        problems.append(problem("MODEL_DIR", "no such folder", str(model_dir)))
    elif not (model_dir / "config.json").is_file():
        problems.append(problem("MODEL_DIR", "no config.json in this folder (not a Hugging Face model folder)", str(model_dir)))
    try:
        text = text_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(problem("--text", f"cannot read: {exc}", str(text_file)))
        text = ""
    if problems:
        raise ConfigError(str(model_dir), problems)
    try:
        import transformers
    except ImportError:
        raise ConfigError(str(model_dir), problem("", "capture needs transformers: pip install 'etr-sim[capture]'")) from None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = transformers.AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(str(model_dir), problem("MODEL_DIR", f"transformers cannot load it: {exc}")) from None
    sequences = split_text(text, tokenizer, seq_len, max_tokens)
    meta = {
        "model": {
            "name": model_name or model_dir.name,
            "class": type(model).__name__,
            "model_type": getattr(model.config, "model_type", None),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        },
        "text": {"file": text_file.name, "sha256": hashlib.sha256(text.encode()).hexdigest(), "seq_len": seq_len},
    }
    return capture(
        model,
        sequences,
        out,
        layers=layers,
        batch_size=batch_size,
        store_dtype=store_dtype,
        meta=meta,
        progress=progress,
        total_tokens=sum(len(s) for s in sequences),
        overwrite=overwrite,
        source=str(model_dir),
    )
