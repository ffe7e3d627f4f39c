"""Every scenario in the library validates, and runs end to end in quick mode (etr_sim.config.reduce)."""

from pathlib import Path

import pandas as pd
import pytest

from etr_sim.cli import main
from etr_sim.config import load_scenario

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.yaml"))
FIXED_NAMES = {
    "quickstart", "paper-etr-910b-32", "paper-etr-910b-64", "paper-etr-910b-256", "paper-locmoe-910a-64",
    "paper-locmoe-910a-128", "paper-locmoe-910a-256", "h100-nic-200g-vs-400g", "h100-rail-vs-oversub",
    "nvl72-vs-8gpu-nodes", "deepseek-v3-h800",
}


def test_library_has_the_fixed_names():
    assert FIXED_NAMES <= {p.stem for p in SCENARIOS}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_validates_with_its_own_name(path):
    loaded = load_scenario(path)
    assert loaded.scenario.name == path.stem


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_runs_in_quick_mode(path, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(path), "--quick", "--out", str(out), "-q"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    loaded = load_scenario(path)
    n_variants = max(len(loaded.variants), 1)
    assert len(summary) == len(loaded.scenario.routers) * n_variants
    assert (summary.step_s > 0).all()
