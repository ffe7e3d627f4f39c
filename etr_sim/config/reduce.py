"""Shrink a scenario for a quick check: same cluster, layout, routers and topology, far fewer tokens.

Used by the scenario-library tests and by ``etr-sim run --quick``. Every change is listed in
``QUICK_OVERRIDES_DOC`` so a reduced run is never mistaken for the real one.
"""

from __future__ import annotations

import copy

QUICK_OVERRIDES_DOC = (
    "quick mode: seq_len -> 128 x tp tokens, 1 layer per pipeline stage (MoE if the model has MoE layers), "
    "one micro-batch per data-parallel replica, 1 sampled MoE layer, at most 2 training stages, "
    "variants keep their overrides except parallelism"
)


def quick(data: dict) -> dict:
    """A reduced copy of a raw scenario mapping (see QUICK_OVERRIDES_DOC). Validate ``data`` first:
    this assumes its sections have the right types."""
    out = copy.deepcopy(data)
    if isinstance(out.get("name"), str):
        out["name"] = f"{out['name']}-quick"  # its own report folder, never mistaken for the full run
    par = out.setdefault("parallelism", {})
    model = out.setdefault("model", {})
    tp, pp = int(par.get("tp", 1)), int(par.get("pp", 1))
    par["seq_len"] = 128 * tp
    moe = int(model.get("moe_layers", 1))
    model["num_layers"] = pp
    model["moe_layers"] = min(moe, pp)
    par.pop("global_batch", None)  # default: one micro-batch per data-parallel replica
    step = out.setdefault("step", {})
    step["sampled_layers"] = 1
    step["sampled_microbatches"] = 1
    training = out.get("training")
    if training and training.get("stages"):
        training["stages"] = training["stages"][:2]
    for v in out.get("variants") or []:
        if isinstance(v, dict) and isinstance(v.get("overrides"), dict):
            v["overrides"].pop("parallelism", None)
    return out
