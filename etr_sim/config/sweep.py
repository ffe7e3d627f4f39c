"""The sweep schema: a base scenario plus axes over YAML paths, combined as a product or a zip.

A sweep file (``sweeps/NAME.yaml``)::

    name: nic-bandwidth-x-router
    scenario: ../scenarios/quickstart.yaml   # base scenario file (relative to this file) or a mapping
    set: {parallelism.seq_len: 1024}         # optional: the same change applied to every point
    combine: product                         # or zip (all axes the same length, stepped together)
    axes:
      - path: topology.overrides.node.nic.bandwidth_gbps
        name: nic_gbps                       # column name in the results (default: last path key)
        values: [100, 200, 400, 800]
    plot: {metric: step_s, relative_to: null}

Only the shape of the file is checked here; whether each path exists in the base scenario and each
point is a valid scenario is checked by ``etr_sim.sweep.grid.expand`` with the normal loader.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from etr_sim.config.base import Strict, read_yaml, validate
from etr_sim.errors import ConfigError, Problem, problem

# Columns the results table already uses; an axis may not take one of these names.
RESERVED_COLUMNS = ("point", "key", "status", "error", "router", "cached", "elapsed_s")

_SEGMENT = r"[A-Za-z_][A-Za-z0-9_]*(\[\d+\])*"
_PATH_RE = re.compile(rf"^{_SEGMENT}(\.{_SEGMENT})*$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def parse_path(path: str) -> list[str | int] | None:
    """``routers[0].capacity_factor`` -> ``['routers', 0, 'capacity_factor']``; None if malformed."""
    if not _PATH_RE.match(path):
        return None
    parts: list[str | int] = []
    for seg in path.split("."):
        name, *idx = seg.split("[")
        parts.append(name)
        parts += [int(i.rstrip("]")) for i in idx]
    return parts


class Axis(Strict):
    """One swept quantity: a YAML path into the scenario and the values it takes (any YAML value;
    a mapping or list replaces the whole subtree at ``path``)."""

    path: str = Field(description="dotted YAML path with [i] list indexes, e.g. routers[0].capacity_factor")
    name: str | None = Field(None, description="column name in the results; defaults to the path's last key")
    values: Annotated[list[Any], Field(min_length=1)]

    @property
    def column(self) -> str:
        if self.name:
            return self.name
        last = [p for p in (parse_path(self.path) or [self.path]) if isinstance(p, str)]
        return str(last[-1])


class PlotSpec(Strict):
    """What the sweep plots: ``metric`` (a column of the summary table, e.g. layer_s) against each axis,
    one line per router. With ``relative_to`` a router label, plot that router's metric divided by
    each router's (a speedup over the baseline; > 1 is faster than the baseline for time metrics)."""

    metric: str = Field("step_s", description="a column of the run summary (etr-sim run's summary.csv), "
                        "checked once results exist")
    relative_to: str | None = None
    log_x: bool = False
    axes: list[str] | None = Field(None, description="axis columns to plot against (default: every axis); in a "
                                   "zip sweep, axes that only follow another (tp, pp with nodes) need no plot")


class SweepSpec(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    scenario: str | dict[str, Any] = Field(
        description="base scenario: a file path (relative to the sweep file) or an inline scenario mapping"
    )
    set: dict[str, Any] = Field(default_factory=dict, description="YAML path -> value applied to every point")
    combine: Literal["product", "zip"] = Field(
        "product", description="product: every combination of axis values; zip: the i-th values of all axes together"
    )
    axes: Annotated[list[Axis], Field(min_length=1)]
    invalid_points: Literal["error", "skip"] = Field(
        "error",
        description="a point the loader rejects: 'error' refuses the whole sweep before running (exit 2); "
        "'skip' records it as status 'invalid' with the reason and runs the rest",
    )
    plot: PlotSpec = PlotSpec()


def _shape_problems(spec: SweepSpec) -> list[Problem]:
    out: list[Problem] = []
    seen: dict[str, int] = {}
    for i, axis in enumerate(spec.axes):
        if parse_path(axis.path) is None:
            out.append(problem(f"axes[{i}].path", "not a YAML path like a.b[0].c", axis.path))
        col = axis.column
        if axis.name is not None and not _NAME_RE.match(axis.name):
            out.append(problem(f"axes[{i}].name", "use letters, digits, _ . -", axis.name))
        if col in RESERVED_COLUMNS:
            out.append(problem(f"axes[{i}].name", f"reserved column name; reserved: {', '.join(RESERVED_COLUMNS)}", col))
        if col in seen:
            out.append(problem(f"axes[{i}].name", f"same column name as axes[{seen[col]}]; set a distinct name", col))
        seen.setdefault(col, i)
    for key in spec.set:
        if parse_path(key) is None:
            out.append(problem(f"set[{key!r}]", "not a YAML path like a.b[0].c", key))
    if spec.combine == "zip":
        n = len(spec.axes[0].values)
        for i, axis in enumerate(spec.axes[1:], start=1):
            if len(axis.values) != n:
                out.append(
                    problem(f"axes[{i}].values", f"combine: zip needs every axis as long as axes[0] ({n} values)",
                            len(axis.values))
                )
    return out


def read_sweep(path: str | Path) -> SweepSpec:
    """Read and shape-check a sweep file; every problem is reported at once as a ConfigError."""
    path = Path(path)
    spec = validate(SweepSpec, read_yaml(path), str(path))
    problems = _shape_problems(spec)
    if problems:
        raise ConfigError(str(path), problems)
    return spec
