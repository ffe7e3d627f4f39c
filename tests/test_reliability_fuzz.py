"""Fuzzed scenario and topology files must end in success or a ConfigError/TopologyError naming the
file and a YAML path; never another exception, and validation stays cheap even for huge sizes.

A case = one library file (scenarios/*.yaml or topologies/*.yaml) parsed to a tree, then 1-3
mutations at random places: replace a value by a wrong type / out-of-range number / huge size /
unknown kind / string-for-number, delete a key, add an unknown key, delete or duplicate a list item,
scale a number by a huge factor. The mutated tree goes through the real loaders (scenario loader,
topology loader, topology builder, the resource guard's estimate).
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from etr_sim.config.base import read_yaml
from etr_sim.config.load import load_scenario_dict, load_topology
from etr_sim.errors import ConfigError
from etr_sim.guard import estimate
from etr_sim.topology import build_topology


ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
TOPOLOGIES = sorted((ROOT / "topologies").glob("*.yaml"))
FILES = SCENARIOS + TOPOLOGIES
TREES = {p: yaml.safe_load(p.read_text()) for p in FILES}

HUGE = [10**6, 10**9, 10**12, 10**18, 2**63, 10**100, 1e300, math.inf]
BAD_NUMBERS = [0, -1, -(10**9), 0.5, -0.0, math.nan, -math.inf, 1e-300, 3.7]
WRONG_TYPES = ["", "abc", "12", "1e9", "400G", None, True, False, [], [1, 2], {}, {"kind": "x"}, "null", "\x00"]
KINDS = ["nonexistent", "ETR", "token-choice", "", "direct ", "ring", "tree", "fat_tree", "rail_optimized",
         "captured", "synthetic", "hash", "expert_choice"]


def paths(tree, prefix=()) -> list[tuple]:
    """Every location in the tree: (key or index, ...)."""
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += paths(v, prefix + (i,))
    return out


def _parent(tree, path):
    cur = tree
    for k in path[:-1]:
        cur = cur[k]
    return cur


def mutate(tree, path: tuple, how: str, value):
    """Apply one mutation in place (the tree is a deep copy). Returns the tree (the root may change)."""
    value = copy.deepcopy(value)  # never share (or nest) one object in two places
    if not path:  # the root: replace it or add a top-level key
        if how == "add_key" and isinstance(tree, dict):
            tree[f"unknown_{value!s}"[:30]] = value
            return tree
        return value if how == "replace" else tree
    parent, key = _parent(tree, path), path[-1]
    if how == "replace":
        parent[key] = value
    elif how == "delete":
        del parent[key]
    elif how == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    elif how == "add_key" and isinstance(parent[key], dict):
        parent[key][f"unknown_{value!s}"[:30]] = value
    elif how == "scale" and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
        parent[key] = parent[key] * value
    elif how == "stringify":
        parent[key] = str(parent[key])
    else:  # mutation not applicable here: replace instead
        parent[key] = value
    return tree


values = st.one_of(st.sampled_from(HUGE), st.sampled_from(BAD_NUMBERS), st.sampled_from(WRONG_TYPES),
                   st.sampled_from(KINDS), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                   st.text(max_size=8))
HOW = ["replace", "replace", "replace", "delete", "duplicate", "add_key", "scale", "stringify"]


@st.composite
def cases(draw, files=FILES):
    """(file, mutated tree, list of applied mutations)."""
    file = draw(st.sampled_from(files))
    tree = copy.deepcopy(TREES[file])
    applied = []
    for _ in range(draw(st.integers(1, 3))):
        locs = paths(tree)
        path = draw(st.sampled_from(locs))
        how = draw(st.sampled_from(HOW))
        value = draw(st.sampled_from(HUGE + [1e6, 64, 1024]) if how == "scale" else values)
        tree = mutate(tree, path, how, value)
        applied.append((path, how, value))
    return file, tree, applied


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
SLOW = settings(max_examples=5000, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


@FAST
@given(cases())
def test_fuzzed_inputs_fail_cleanly(case):
    file, tree, _ = case
    event(f"{file.parent.name}: {check_case(file, tree)}")  # --hypothesis-show-statistics: ok vs error


@pytest.mark.slow
@SLOW
@given(cases())
def test_fuzzed_inputs_fail_cleanly_many(case):
    file, tree, _ = case
    event(f"{file.parent.name}: {check_case(file, tree)}")


# Regressions: each crashed (or exhausted memory) before the fix the fuzzer led to.
@pytest.mark.parametrize("file, path, value, where", [
    ("ascend-910b.yaml", ("nodes",), 10**12, "nodes"),  # MemoryError in the builder
    ("ascend-910a.yaml", ("node", "gpus"), 12292, "node.gpus"),  # 9 GiB intra-node route tables
    ("ascend-910b.yaml", ("fabric", "nics_per_leaf"), 2**63, "fabric.nics_per_leaf"),  # OverflowError
    ("ascend-910b.yaml", ("node", "template"), [], "node.template"),  # TypeError: unhashable list
])
def test_fuzz_regressions(file, path, value, where):
    f = ROOT / "topologies" / file
    tree = mutate(copy.deepcopy(TREES[f]), path, "replace", value)
    assert check_case(f, tree) == "error"
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / file
        p.write_text(yaml.safe_dump(tree))
        with pytest.raises(ConfigError) as exc:
            build_topology(load_topology(p), str(p))
    assert any(pr.path.startswith(where) for pr in exc.value.problems), str(exc.value)
    assert str(p) in str(exc.value)
