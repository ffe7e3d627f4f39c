"""Write a run folder atomically: summary.csv, layers.csv, scenario.resolved.yaml, comparison.png, report.md.

The folder is assembled under a temporary name next to its destination and renamed at the end, so
a failure or interrupt never leaves a half-written report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from etr_sim import __version__
from etr_sim.pipeline import RunResult
from etr_sim.report.plots import comparison_plot
from etr_sim.report.table import format_table


def run_id(resolved: dict) -> str:
    """seed + hash of the resolved scenario and etr-sim version: same input, same folder; never a timestamp."""
    blob = json.dumps({"scenario": resolved, "version": __version__}, sort_keys=True).encode()
    return f"seed{resolved.get('seed', 0)}-{hashlib.sha256(blob).hexdigest()[:10]}"


def default_out_dir(result: RunResult, reports_root: Path = Path("reports")) -> Path:
    resolved = result.loaded.resolved
    return reports_root / resolved["name"] / run_id(resolved)


def _report_md(result: RunResult) -> str:
    s = result.loaded.scenario
    lines = [
        f"# {s.name}",
        "",
        s.description,
        "",
        f"- topology: `{result.loaded.topology.name}` ({result.topology.num_gpus} GPUs, "
        f"{result.loaded.topology.nodes} nodes), collective `{s.collective.algorithm}`",
        f"- model: `{s.model.name}`: hidden {s.model.hidden_size}, FFN {s.model.ffn_hidden_size}, "
        f"{s.model.num_experts} experts, top-{s.model.top_k}, {s.model.moe_layers} MoE layer(s)",
        f"- tokens per GPU: {s.parallelism.tokens_per_gpu}; activations: `{s.activations.kind}`; seed {s.seed}",
        "",
        "## Comparison",
        "",
        "```",
        format_table(result.summary),
        "```",
        "",
        "![comparison](comparison.png)",
        "",
        "Times are simulated seconds per training step summed over MoE layers (forward only). Bytes count",
        "dispatch plus combine traffic that crosses a link. Files: `summary.csv` (this table),",
        "`layers.csv` (per router and layer), `scenario.resolved.yaml` (every default filled in).",
        "",
    ]
    return "\n".join(lines)


def write_report(result: RunResult, out_dir: Path) -> Path:
    """Write the run folder at ``out_dir`` (replacing an older one atomically). Returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        result.summary.to_csv(tmp / "summary.csv", index=False)
        result.layers.to_csv(tmp / "layers.csv", index=False)
        (tmp / "scenario.resolved.yaml").write_text(
            yaml.safe_dump(result.loaded.resolved, sort_keys=False), encoding="utf-8"
        )
        comparison_plot(result.summary, result.loaded.scenario.name, tmp / "comparison.png")
        (tmp / "report.md").write_text(_report_md(result), encoding="utf-8")
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


__all__ = ["default_out_dir", "run_id", "write_report"]
