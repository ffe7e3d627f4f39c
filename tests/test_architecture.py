"""Imports go downward: sim, traffic and topology never import torch; only report imports matplotlib."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "etr_sim"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", ["sim", "traffic", "topology", "config", "metrics"])
def test_no_torch_below_routing(package):
    for path in (PKG / package).rglob("*.py"):
        assert "torch" not in imported_modules(path), path


def test_matplotlib_only_in_report():
    for path in PKG.rglob("*.py"):
        if "report" not in path.relative_to(PKG).parts:
            assert "matplotlib" not in imported_modules(path), path


def test_downstream_stages_import_without_torch():
    import subprocess
    import sys

    code = (
        "import sys, etr_sim.traffic.matrix, etr_sim.traffic.collectives, etr_sim.sim.step, etr_sim.sim.memory, "
        "etr_sim.topology, etr_sim.metrics, etr_sim.config, etr_sim.routing;"
        "assert 'torch' not in sys.modules, 'torch imported'; assert 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PKG.parent)
