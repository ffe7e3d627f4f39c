"""Shared mutation engine for the input fuzz tests (tests/test_reliability_fuzz.py).

A case = one library file (scenarios/*.yaml or topologies/*.yaml) parsed to a tree, then 1-3
mutations at random places: replace a value by a wrong type / out-of-range number / huge size /
unknown kind / string-for-number, delete a key, add an unknown key, delete or duplicate a list item.
The mutated tree goes through the real loaders; the only acceptable outcomes are success or a
ConfigError/TopologyError that names the file and at least one YAML path.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml
from hypothesis import strategies as st

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
