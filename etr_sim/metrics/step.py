"""Step records -> tables: ops, per-sample routing facts, per (router, training stage) steps, summary.

Breakdown of a step (per pipeline stage, then averaged over stages): compute = time any compute op
runs; a2a = time an all-to-all runs; other_comm = time TP/PP/DP collectives run outside all-to-alls;
overlap = time compute and communication run together; idle = the rest (pipeline bubbles, waiting).
compute + exposed_a2a + exposed_other_comm + idle = step time (exposed = not hidden under compute).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from etr_sim.config.scenario import Scenario
from etr_sim.metrics.intervals import intersection_length, length
from etr_sim.sim import compute as C
from etr_sim.sim.step import OpRecord
from etr_sim.topology.graph import Topology
from etr_sim.traffic.layout import Layout
from etr_sim.units import row_bytes

OP_COLUMNS = list(OpRecord._fields)


def _spans(ops: pd.DataFrame) -> np.ndarray:
    return ops[["start_s", "end_s"]].to_numpy(dtype=float)


def breakdown(ops: pd.DataFrame, step_s: float) -> dict[str, float]:
    """Mean over pipeline stages of the step's time split (see module docstring)."""
    parts = []
    for _, st in ops[ops.stage >= 0].groupby("stage"):
        comp, comm = _spans(st[st.stream == "compute"]), _spans(st[st.stream == "comm"])
        a2a = _spans(st[(st.stream == "comm") & (st.category == "a2a")])
        busy, t_comp, t_a2a = length(_spans(st)), length(comp), length(a2a)
        exposed_a2a = t_a2a - intersection_length(a2a, comp)
        parts.append({
            "compute_s": t_comp,
            "a2a_s": t_a2a,
            "other_comm_s": length(comm) - t_a2a,
            "overlap_s": intersection_length(comp, comm),
            "idle_s": max(step_s - busy, 0.0),
            "exposed_a2a_s": exposed_a2a,
            "exposed_other_comm_s": max(busy - t_comp - exposed_a2a, 0.0),
        })
    return pd.DataFrame(parts).mean().to_dict() if parts else {}


def model_flops_per_step(s: Scenario, layout: Layout, microbatches: int) -> float:
    """Useful FLOPs of one training step (forward x 3), routed experts at top-k, no padding."""
    m, par = s.model, s.parallelism
    tokens = par.micro_batch_size * par.seq_len * microbatches * layout.dp
    h = m.hidden_size
    per_token = 0.0
    for layer in range(m.layers):
        per_token += 2 * C.attention_params(m) + 2 * par.seq_len * h  # projections + causal attention core
        if m.is_moe_layer(layer):
            per_token += 2 * h * m.ffn_hidden_size * m.ffn_matmuls * (m.top_k + m.shared_experts)
        else:
            per_token += 2 * h * (m.dense_ffn_hidden_size or m.ffn_hidden_size) * m.ffn_matmuls
    per_token += 2 * h * m.vocab_size
    return 3.0 * per_token * tokens


def link_series(samples: list, classes: tuple[str, ...], end_s: float, bins: int = 2000) -> pd.DataFrame:
    """Utilisation per link class over one step, in at most ``bins`` time buckets.

    samples: (start time, mean [C], max [C]) per rate recomputation, each holding until the next.
    A bucket's ``mean_util`` is the time-weighted mean, ``max_util`` the highest value it saw."""
    cols = ["t_s", "link_class", "mean_util", "max_util"]
    if not samples or end_s <= 0:
        return pd.DataFrame(columns=cols)
    start = np.array([x[0] for x in samples])  # [T]
    mean = np.stack([x[1] for x in samples])  # [T, C]
    peak = np.stack([x[2] for x in samples])
    times = np.r_[start, end_s]  # [T+1] sample boundaries (each sample holds until the next)
    dur = np.diff(times).clip(min=0.0)
    edges = np.linspace(0.0, end_s, bins + 1)
    width = np.diff(edges)
    active = np.clip(np.searchsorted(start, edges[:-1], side="right") - 1, 0, len(start) - 1)  # [bins] at bucket start
    starts_in = np.clip(np.searchsorted(edges, start, side="right") - 1, 0, bins - 1)  # [T] bucket of each start
    frames = []
    for c, name in enumerate(classes):
        integral = np.interp(edges, times, np.r_[0.0, np.cumsum(mean[:, c] * dur)])  # exact: piecewise constant
        m = np.diff(integral) / width
        mx = peak[active, c].copy()  # the sample running when the bucket opens ...
        np.maximum.at(mx, starts_in, peak[:, c])  # ... and every sample that starts inside it
        keep = np.r_[True, (np.diff(m) != 0) | (np.diff(mx) != 0)]  # drop repeats: counters hold values
        frames.append(pd.DataFrame({"t_s": edges[:-1][keep], "link_class": name, "mean_util": m[keep],
                                    "max_util": mx[keep]}))
    return pd.concat(frames, ignore_index=True)


def step_metrics(s: Scenario, layout: Layout, topo: Topology, runs, n_mb: int, order: list[str]) -> dict[str, pd.DataFrame]:
    """Tables of a run; ``n_mb`` micro-batches per step (1 for the MoE-layers scope); ``order``: router labels."""
    training = s.step.scope == "training_step"
    gpus = topo.num_gpus
    m = s.model
    a_over_d = row_bytes(m.hidden_size, m.activation_dtype) / row_bytes(m.hidden_size, m.dispatch_dtype)
    a_over_c = row_bytes(m.hidden_size, m.activation_dtype) / row_bytes(m.hidden_size, m.combine_dtype)
    flops = model_flops_per_step(s, layout, n_mb)
    op_frames, fact_frames, step_rows, load_rows, link_rows, series = [], [], [], [], [], []
    for r in runs:
        ops = pd.DataFrame(r.recorder.ops, columns=OP_COLUMNS).assign(router=r.router, training_stage=r.training_stage)
        ops["duration_s"] = ops.end_s - ops.start_s
        op_frames.append(ops)
        facts = pd.DataFrame(r.facts)
        fact_frames.append(facts)
        row = {"router": r.router, "training_stage": r.training_stage, "step_from": r.step_from,
               "steps": r.steps, "step_s": r.step_s}
        row |= breakdown(ops, r.step_s)
        for name, col in (("dispatch", "dispatch_s"), ("combine", "combine_s"), ("experts", "expert_compute_s")):
            row[col] = float(ops.loc[ops.op == name, "duration_s"].sum())
        a2a = ops.loc[ops.category == "a2a", "duration_s"]
        row["a2a_op_p50_s"] = float(a2a.quantile(0.5)) if len(a2a) else 0.0
        row["a2a_op_p99_s"] = float(a2a.quantile(0.99)) if len(a2a) else 0.0
        if len(facts):
            w = facts.instances.to_numpy()
            bwd = 1.0 if training else 0.0
            for col in ("inter_node_bytes", "intra_node_bytes", "scale_out_bytes"):
                # Forward dispatch + combine, and in training the gradients back in the activation dtype.
                d = facts[f"dispatch_{col}"].to_numpy()
                total = facts[col].to_numpy()
                row[col] = float((w * (d * (1 + bwd * a_over_d) + (total - d) * (1 + bwd * a_over_c))).sum())
            for col in ("dropped_fraction", "padding_fraction", "load_max_over_mean", "tokens_unrouted_fraction"):
                if col in facts:
                    row[col] = float(np.average(facts[col], weights=w))
            row["capacity"] = float(np.average(facts.capacity, weights=w))
        if training:
            row["tokens_per_s_per_gpu"] = s.parallelism.micro_batch_size * s.parallelism.seq_len * n_mb * layout.dp / r.step_s / gpus
            row["mfu"] = flops / (r.step_s * gpus * s.compute.peak_tflops * 1e12)
        else:
            row["tokens_per_s_per_gpu"] = s.parallelism.tokens_per_gpu / r.step_s
        row["a2a_share"] = row.get("a2a_s", 0.0) / r.step_s if r.step_s else 0.0
        mem = {k: v for k, v in r.memory.items() if k.endswith("_bytes")}
        row["memory_bytes"] = float(sum(mem.values()))
        row |= {f"memory_{k}": v for k, v in mem.items()}
        util = r.link_bytes / (topo.capacity_Bps * r.step_s)
        used = util[r.link_bytes > 0]
        row["link_util_p50"] = float(np.quantile(used, 0.5)) if len(used) else 0.0
        row["link_util_p99"] = float(np.quantile(used, 0.99)) if len(used) else 0.0
        step_rows.append(row)
        if r.link_series is not None:
            series.append(r.link_series.assign(router=r.router))
        load_rows.append(pd.DataFrame({"router": r.router, "training_stage": r.training_stage,
                                       "expert": np.arange(len(r.expert_load)), "tokens": r.expert_load}))
        link_rows.append(pd.DataFrame({
            "router": r.router, "training_stage": r.training_stage, "link": np.arange(topo.num_links),
            "link_class": topo.link_class, "src": [e[0] for e in topo.link_ends], "dst": [e[1] for e in topo.link_ends],
            "bytes": r.link_bytes, "utilisation": util,
        }))
    steps = pd.DataFrame(step_rows)
    summary = summarize(steps, order)
    return {
        "ops": pd.concat(op_frames, ignore_index=True),
        "layers": pd.concat(fact_frames, ignore_index=True),
        "steps": steps,
        "summary": summary,
        "expert_load": pd.concat(load_rows, ignore_index=True),
        "links": pd.concat(link_rows, ignore_index=True),
        "link_series": pd.concat(series, ignore_index=True) if series else pd.DataFrame(),
    }


def summarize(steps: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """One row per router: metrics averaged over training stages weighted by the steps each covers."""
    rows = []
    for router in order:
        st = steps[steps.router == router]
        w = st.steps.to_numpy(dtype=float)
        w = w if w.sum() > 0 else np.ones(len(st))
        row = {"router": router}
        for col in st.columns:
            if col in ("router", "training_stage", "step_from", "steps"):
                continue
            row[col] = float(np.average(st[col].fillna(0.0), weights=w))
        row["layer_s"] = row["step_s"]
        row["total_training_s"] = float((st.step_s * st.steps).sum())
        rows.append(row)
    out = pd.DataFrame(rows)
    out["speedup_vs_first"] = out.step_s.iloc[0] / out.step_s
    return out
