"""Write a run folder atomically: tables (CSV + Parquet), plots, traces, report.md and report.html.

The folder is assembled under a temporary name next to its destination and renamed at the end, so
a failure or interrupt never leaves a half-written report. The CLI turns SIGTERM into the same
KeyboardInterrupt as SIGINT, so both clean up; ``Interrupted`` says where the run stopped.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from etr_sim import __version__
from etr_sim.report.plots import write_all
from etr_sim.report.table import format_table, view_for
from etr_sim.report.trace import write_trace


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM arrived; ``where`` names the stage (simulating which router, writing which file)."""

    def __init__(self, where: str):
        super().__init__(where)
        self.where = where


def run_id(resolved: dict) -> str:
    """seed + hash of the resolved scenario and etr-sim version: same input, same folder; never a timestamp."""
    blob = json.dumps({"scenario": resolved, "version": __version__}, sort_keys=True).encode()
    return f"seed{resolved.get('seed', 0)}-{hashlib.sha256(blob).hexdigest()[:10]}"


def default_out_dir(loaded, reports_root: Path = Path("reports")) -> Path:
    resolved = loaded.resolved
    return reports_root / resolved["name"] / run_id(resolved)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _setup_lines(result) -> list[str]:
    s, topo = result.loaded.scenario, result.loaded.topology
    par = s.parallelism
    return [
        f"- topology: `{topo.name}`, {result.topology.num_gpus} GPUs in {topo.nodes} nodes; collective "
        f"`{s.collective.algorithm}` (dedup `{s.collective.dedup}`)",
        f"- model: `{s.model.name}`: {s.model.layers} layers ({s.model.moe_layers} MoE), hidden {s.model.hidden_size}, "
        f"FFN {s.model.ffn_hidden_size}, {s.model.num_experts} experts, top-{s.model.top_k}",
        f"- parallelism: TP{par.tp} PP{par.pp} EP{par.ep}, micro-batch {par.micro_batch_size} x {par.seq_len} tokens",
        f"- scope: `{s.step.scope}`; activations `{s.activations.kind}`; seed {s.seed}; "
        f"training steps {s.training.steps} in {len(result.steps.training_stage.unique())} stage(s)",
    ]


def _report_md(result, plots: list[str]) -> str:
    s = result.loaded.scenario
    lines = [f"# {s.name}", "", s.description, "", *_setup_lines(result), "", "## Comparison", "", "```",
             format_table(result.summary, view_for(s.step.scope)), "```", ""]
    lines += [f"![{p}]({p})" for p in plots]
    lines += [
        "",
        "Times are simulated seconds per step (scope `moe_layers`: the forward pass of the MoE blocks of one",
        "micro-batch; `training_step`: a full training step). Bytes count all-to-all traffic that crosses a link.",
        "Tables: `summary` (per router), `steps` (per router and training stage), `layers` (per routed sample),",
        "`ops` (every timed op), `links` (per link), `expert_load`; each as CSV and Parquet. Traces: `trace-*.json`",
        "(open in https://ui.perfetto.dev or chrome://tracing). `scenario.resolved.yaml`: the scenario as simulated.",
        "",
    ]
    return "\n".join(lines)


def _report_html(result, folder: Path, plots: list[str]) -> str:
    s = result.loaded.scenario
    imgs = "".join(
        f'<figure><img alt="{p}" src="data:image/png;base64,{base64.b64encode((folder / p).read_bytes()).decode()}"></figure>'
        for p in plots
    )
    setup = "".join(f"<li>{html.escape(x[2:]).replace('`', '')}</li>" for x in _setup_lines(result))
    table = result.summary.to_html(index=False, float_format=lambda v: f"{v:.6g}", border=0)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>etr-sim: "
        f"{html.escape(s.name)}</title><style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}"
        "table{border-collapse:collapse;font-size:12px}td,th{padding:3px 6px;border-bottom:1px solid #ddd;text-align:right}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(s.name)}</h1><p>{html.escape(s.description)}</p><ul>{setup}</ul>"
        f"<h2>Comparison</h2><pre>{html.escape(format_table(result.summary, view_for(s.step.scope)))}</pre>"
        f"<h2>All summary columns</h2>{table}<h2>Plots</h2>{imgs}</body></html>"
    )


def write_report(result, out_dir: Path) -> Path:
    """Write the run folder at ``out_dir`` (replacing an older one atomically). Returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    step = "tables"
    try:
        for name in ("summary", "steps", "layers", "ops", "links", "link_series", "expert_load"):
            step = f"table {name}"
            frame = getattr(result, name)
            frame.to_csv(tmp / f"{name}.csv", index=False)
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
        (tmp / "scenario.resolved.yaml").write_text(
            yaml.safe_dump(result.loaded.resolved, sort_keys=False), encoding="utf-8"
        )
        step = "plots"
        plots = write_all(result, tmp)
        for router in result.summary.router:
            step = f"trace of {router}"
            write_trace(result.ops, router, tmp / f"trace-{_safe(router)}.json", result.link_series)
        step = "report.md / report.html"
        (tmp / "report.md").write_text(_report_md(result, plots), encoding="utf-8")
        (tmp / "report.html").write_text(_report_html(result, tmp, plots), encoding="utf-8")
        step = "the final rename"
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except KeyboardInterrupt as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise Interrupted(f"while writing {step} of {out_dir} (the report folder was not created or changed)") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
