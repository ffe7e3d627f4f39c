"""Put several run folders side by side (``etr-sim compare RUN...``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from etr_sim.errors import ConfigError, problem


def load_runs(folders: list[str]) -> pd.DataFrame:
    """Concatenate the ``summary.csv`` of each run folder, with a ``run`` column (scenario name/folder)."""
    frames, problems = [], []
    for folder in folders:
        path = Path(folder)
        summary = path / "summary.csv"
        if not summary.is_file():
            problems.append(problem(str(folder), "not a run folder (no summary.csv)", str(folder)))
            continue
        resolved = path / "scenario.resolved.yaml"
        name = yaml.safe_load(resolved.read_text())["name"] if resolved.is_file() else path.name
        frames.append(pd.read_csv(summary).assign(run=f"{name}/{path.name}"))
    if problems:
        raise ConfigError("etr-sim compare", problems)
    table = pd.concat(frames, ignore_index=True)
    table["router"] = table.run + ":" + table.router
    table["speedup_vs_first"] = table.step_s.iloc[0] / table.step_s
    return table
