"""A sweep file -> its points: each point a resolved scenario validated by the normal loader.

A point is the base scenario with ``set`` applied, then one value of every axis (``product``:
every combination, the last axis varying fastest; ``zip``: the i-th value of every axis). Setting a
path creates missing mappings on the way (``topology.overrides.node.nic`` in a scenario without
overrides) but never missing list items; whether the key is one the scenario or topology schema
knows is then decided by the loader, and an unknown key is reported as a path that does not exist.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etr_sim import __version__
from etr_sim.config.base import read_yaml
from etr_sim.config.load import LoadedScenario, load_scenario_dict
from etr_sim.config.sweep import SweepSpec, parse_path, read_sweep
from etr_sim.errors import ConfigError, Problem, problem


@dataclass(frozen=True)
class Point:
    """One scenario of the sweep.

    values: axis column -> value, in axis order. key: content hash of the resolved scenario and the
    etr-sim version (the cache key). loaded: the validated scenario, or None when ``invalid``.
    """

    index: int
    values: dict[str, Any]
    key: str
    loaded: LoadedScenario | None
    invalid: str | None = None

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


@dataclass(frozen=True)
class Sweep:
    """A checked sweep: its spec, where it came from, and every point in grid order."""

    spec: SweepSpec
    source: str
    points: list[Point] = field(repr=False)

    @property
    def axis_columns(self) -> list[str]:
        return [a.column for a in self.spec.axes]

    @property
    def router_labels(self) -> list[str]:
        for p in self.points:
            if p.loaded is not None:
                return router_labels(p.loaded)
        return []


def router_labels(loaded: LoadedScenario) -> list[str]:
    """Router labels as the run summary names them (``variant/router`` when the scenario has variants)."""
    return [prefix + r.label for prefix, sc in loaded.runs() for r in sc.scenario.routers]


class PathMissing(Exception):
    """Setting a path failed because a list index or a container is not there."""


def set_path(data: Any, parts: list[str | int], value: Any) -> None:
    """Set ``data[parts[0]][parts[1]]... = value`` in place, creating missing mappings (not list items)."""
    cur = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(part, int):
            if not isinstance(cur, list):
                raise PathMissing(f"{_render(parts[:i])} is not a list")
            if not 0 <= part < len(cur):
                raise PathMissing(f"{_render(parts[:i])} has {len(cur)} entries, no index {part}")
        else:
            if not isinstance(cur, dict):
                raise PathMissing(f"{_render(parts[:i])} is not a mapping")
            if part not in cur and not last:
                cur[part] = [] if isinstance(parts[i + 1], int) else {}
        if last:
            cur[part] = copy.deepcopy(value)
        else:
            cur = cur[part]


def _render(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "<scenario>"


def point_key(loaded: LoadedScenario) -> str:
    """sha256 of the resolved scenario (every default filled in, topology inlined) and the etr-sim
    version. Where the topology file was found is left out: only content decides the result."""
    resolved = loaded.resolved
    resolved["topology"] = {k: v for k, v in resolved["topology"].items() if k != "resolved_from"}
    blob = json.dumps({"scenario": resolved, "version": __version__}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _combinations(spec: SweepSpec) -> list[list[int]]:
    """Index of each axis's value for every point, in grid order."""
    if spec.combine == "zip":
        return [[j] * len(spec.axes) for j in range(len(spec.axes[0].values))]
    return [list(c) for c in itertools.product(*(range(len(a.values)) for a in spec.axes))]


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")


def _load_base(spec: SweepSpec, sweep_file: Path) -> tuple[dict, Path, str]:
    if isinstance(spec.scenario, dict):
        return copy.deepcopy(spec.scenario), sweep_file.parent, f"{sweep_file} (scenario)"
    base_file = Path(spec.scenario)
    if not base_file.is_absolute():
        base_file = sweep_file.parent / base_file
    if not base_file.is_file():
        raise ConfigError(str(sweep_file), problem("scenario", f"no such scenario file ({base_file})", spec.scenario))
    return read_yaml(base_file), base_file.parent, str(base_file)


def expand(spec: SweepSpec, sweep_file: str | Path) -> Sweep:
    """Build and validate every point. Raises ConfigError (naming the sweep file, the YAML path in
    it and the bad value) for paths that do not exist and, unless ``invalid_points: skip``, for
    points the loader rejects; all problems are collected before raising."""
    sweep_file = Path(sweep_file)
    src = str(sweep_file)
    base, base_dir, base_name = _load_base(spec, sweep_file)
    problems: list[Problem] = []

    # Where each changed path lives in the sweep file, for error messages.
    changes: list[tuple[str, str, list[str | int]]] = []  # (scenario path, sweep-file path, parts)
    for key in spec.set:
        changes.append((key, f"set[{key!r}]", parse_path(key) or []))
    for i, axis in enumerate(spec.axes):
        changes.append((axis.path, f"axes[{i}].path", parse_path(axis.path) or []))

    for key, value in spec.set.items():
        try:
            set_path(base, parse_path(key) or [], value)
        except PathMissing as exc:
            problems.append(problem(f"set[{key!r}]", f"does not exist in the base scenario: {exc}", key))

    combos = _combinations(spec)
    points: list[Point] = []
    missing_paths: dict[str, Problem] = {}
    value_problems: dict[tuple, Problem] = {}
    other: dict[tuple, tuple[Problem, list[int]]] = {}  # problems the axes do not explain
    for index, combo in enumerate(combos):
        values = {a.column: a.values[j] for a, j in zip(spec.axes, combo)}
        data = copy.deepcopy(base)
        ok = True
        for i, (axis, j) in enumerate(zip(spec.axes, combo)):
            try:
                set_path(data, parse_path(axis.path) or [], axis.values[j])
            except PathMissing as exc:
                missing_paths.setdefault(
                    f"axes[{i}].path", problem(f"axes[{i}].path", f"does not exist in the base scenario: {exc}", axis.path)
                )
                ok = False
        label = ", ".join(f"{k}={v}" for k, v in values.items())
        try:
            loaded = load_scenario_dict(data, f"{src} point {index} ({label})", base_dir)
        except ConfigError as exc:
            reasons = []
            for p in exc.problems:
                reasons.append(p.render())
                # An unknown key ON a changed path means the path does not exist; an unknown key
                # below it (inside a mapping an axis sets) is a bad value, handled next.
                owner = [c for c in changes if _under(c[0], p.path)]
                if owner and p.message == "unknown key":
                    scen_path, where, _ = owner[-1]
                    missing_paths.setdefault(
                        where,
                        problem(where, f"does not exist in the base scenario or its schema ({p.path}: unknown key)",
                                scen_path),
                    )
                    continue
                axis_owner = [i for i, a in enumerate(spec.axes) if _under(p.path, a.path)]
                if axis_owner:
                    i = axis_owner[-1]
                    j = combo[i]
                    value_problems.setdefault(
                        (i, j, p.message),
                        problem(f"axes[{i}].values[{j}]", f"{p.path}: {p.message} (e.g. at point {index}: {label})",
                                spec.axes[i].values[j]),
                    )
                elif set_owner := [k for k in spec.set if _under(p.path, k)]:
                    key = set_owner[-1]
                    value_problems.setdefault(
                        (key, p.message), problem(f"set[{key!r}]", f"{p.path}: {p.message}", spec.set[key]))
                else:
                    other.setdefault((p.path, p.message, repr(p.value)), (p, []))[1].append(index)
            points.append(Point(index, values, f"invalid-{index}", None, "; ".join(reasons)))
            continue
        if ok:  # (a point with a missing path is reported above and never runs)
            points.append(Point(index, values, point_key(loaded), loaded))

    problems += list(missing_paths.values())
    baseline = spec.plot.relative_to
    valid = [p for p in points if p.loaded is not None]
    if baseline is not None and valid and baseline not in router_labels(valid[0].loaded):
        problems.append(problem("plot.relative_to", f"not a router of the scenario; routers: "
                                f"{', '.join(router_labels(valid[0].loaded))}", baseline))
    columns = [a.column for a in spec.axes]
    for i, name in enumerate(spec.plot.axes or []):
        if name not in columns:
            problems.append(problem(f"plot.axes[{i}]", f"not an axis column; axes: {', '.join(columns)}", name))
    if spec.invalid_points == "error" or missing_paths:
        problems += list(value_problems.values())
        for p, where in other.values():
            at = "every point" if len(where) == len(combos) else f"points {', '.join(map(str, where[:8]))}" + (
                " ..." if len(where) > 8 else "")
            problems.append(Problem("scenario", f"{p.path}: {p.message} at {at} (base scenario {base_name})",
                                    p.value, p.has_value))
    if problems:
        raise ConfigError(src, problems)
    return Sweep(spec, src, points)


def load_sweep(path: str | Path) -> Sweep:
    """Read, shape-check and expand a sweep file (see ``expand``)."""
    return expand(read_sweep(path), path)
