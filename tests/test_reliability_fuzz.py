"""Fuzzed scenario and topology files must end in success or a ConfigError/TopologyError naming the
file and a YAML path; never another exception, and validation stays cheap even for huge sizes."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from etr_sim.config.load import load_scenario_dict, load_topology
from etr_sim.config.base import read_yaml
from etr_sim.errors import ConfigError
from etr_sim.guard import estimate
from etr_sim.topology import build_topology
from tests.reliability_fuzz import SCENARIOS, cases

MAX_CASE_S = 20.0  # generous on a shared 2-core machine; a hang or a huge allocation takes far longer


def check_case(file: Path, tree) -> str:
    """Run one mutated tree through the real loaders. Returns 'ok' or 'error'; anything else fails."""
    start = time.perf_counter()
    try:
        if file in SCENARIOS:
            if isinstance(tree, dict):
                loaded = load_scenario_dict(tree, file)  # relative paths resolve from the library folder
                build_topology(loaded.topology, loaded.topology_source)
                estimate(loaded)  # the resource guard's estimate must be cheap and finite too
            else:
                with tempfile.TemporaryDirectory() as d:
                    p = Path(d) / file.name
                    p.write_text(yaml.safe_dump(tree))
                    load_scenario_dict(read_yaml(p), p)
        else:
            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / file.name
                p.write_text(yaml.safe_dump(tree, allow_unicode=True))
                build_topology(load_topology(p), str(p))
        outcome = "ok"
    except ConfigError as exc:  # TopologyError is a ConfigError
        assert exc.file.endswith(file.name), exc.file
        assert exc.problems, exc
        for p in exc.problems:
            assert p.message
        assert any(p.path for p in exc.problems) or not isinstance(tree, dict) or not tree, str(exc)
        outcome = "error"
    elapsed = time.perf_counter() - start
    assert elapsed < MAX_CASE_S, f"validation of {file.name} took {elapsed:.1f} s"
    return outcome


FAST = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=2500, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


@FAST
@given(cases())
def test_fuzzed_inputs_fail_cleanly(case):
    file, tree, _ = case
    check_case(file, tree)


@pytest.mark.slow
@SLOW
@given(cases())
def test_fuzzed_inputs_fail_cleanly_many(case):
    file, tree, _ = case
    check_case(file, tree)
