"""Write the capacity-theory report: theory_capacity.csv, theory_montecarlo.csv, theory.md, theory.png."""

from __future__ import annotations

from pathlib import Path

from etr_sim.report.theory_plots import theory_plot
from etr_sim.routing.theory import capacity_table, theorem5_sweep


def _md_table(df) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def write_theory(out: Path, trials: int = 2000, seed: int = 0) -> Path:
    """Compute the tables and the plot into ``out`` (created). Returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    cap = capacity_table()
    mc = theorem5_sweep(trials=trials, seed=seed)
    cap.to_csv(out / "theory_capacity.csv", index=False)
    mc.to_csv(out / "theory_montecarlo.csv", index=False)
    theory_plot(mc, out / "theory.png")
    md = [
        "# Capacity theory (LocMoE Theorem 1, ETR Remark 7, ETR Theorem 5 / Corollary 6)",
        "",
        "## LocMoE Theorem 1: C_min = 1 / (n p_delta), p_delta = 1 - I_{delta^2}(1/2, (d-1)/2)",
        "",
        "ETR Remark 7 is the same bound evaluated at the maximal angular deviation delta_max.",
        "",
        _md_table(cap),
        "",
        f"## Theorem 5 Monte-Carlo ({trials} trials per rho, seed {seed})",
        "",
        "Success = the discriminative token is kept by its expert. Bounds are averaged over trials",
        "(NaN where no trial is in the bound's regime). See etr_sim/routing/theory.py for the data model.",
        "",
        _md_table(mc.drop(columns=["d", "n", "s"])),
        "",
        "![theory](theory.png)",
        "",
    ]
    (out / "theory.md").write_text("\n".join(md), encoding="utf-8")
    return out
