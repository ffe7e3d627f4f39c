"""Load a scenario and its topology, validate everything, and report all problems at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from etr_sim.config.base import deep_merge, problems_from_validation, read_yaml, validate
from etr_sim.config.scenario import Scenario
from etr_sim.config.topology import TopologySpec
from etr_sim.errors import ConfigError, Problem, TopologyError, problem
from pydantic import ValidationError

REPO_TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario with its resolved topology. ``resolved`` is what gets written next to results."""

    scenario: Scenario
    topology: TopologySpec
    source: str
    topology_source: str

    @property
    def resolved(self) -> dict:
        data = self.scenario.model_dump(mode="json")
        data["topology"] = {"resolved_from": self.topology_source, **self.topology.model_dump(mode="json")}
        return data


def topology_search_path(scenario_file: Path | None, base_dir: Path | None = None) -> list[Path]:
    """Folders searched for ``topology.name``: next to the scenario (``base_dir`` defaults to the
    scenario file's folder), its parent, the working directory, then the bundled library."""
    paths = []
    if base_dir is None and scenario_file is not None:
        base_dir = scenario_file.parent
    if base_dir is not None:
        paths += [base_dir / "topologies", base_dir.parent / "topologies"]
    paths += [Path.cwd() / "topologies", REPO_TOPOLOGIES]
    seen, out = set(), []
    for p in paths:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def library_topologies() -> list[str]:
    return sorted(p.stem for p in REPO_TOPOLOGIES.glob("*.yaml"))


def find_topology(name: str, scenario_file: Path | None, base_dir: Path | None = None) -> Path | None:
    for folder in topology_search_path(scenario_file, base_dir):
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def load_topology(path: str | Path, nodes: int | None = None, overrides: dict | None = None) -> TopologySpec:
    """Read a topology file, apply the cluster size and overrides, and validate."""
    data = read_yaml(path)
    if nodes is not None:
        data["nodes"] = nodes
    data = deep_merge(data, overrides or {})
    spec = validate(TopologySpec, data, str(path), TopologyError)
    return spec


def _cross_checks(s: Scenario, topo: TopologySpec) -> list[Problem]:
    """Checks that span several fields; each names the field a user would change."""
    out: list[Problem] = []
    m, par = s.model, s.parallelism
    gpus = topo.nodes * topo.node.gpus
    if m.num_experts % par.ep:
        out.append(problem("parallelism.ep", f"model.num_experts={m.num_experts} is not divisible by ep", par.ep))
    if gpus % par.ep:
        out.append(problem("parallelism.ep", f"the topology has {gpus} GPUs, not a multiple of ep", par.ep))
    if m.top_k > m.num_experts:
        out.append(problem("model.top_k", f"larger than model.num_experts={m.num_experts}", m.top_k))
    labels: set[str] = set()
    d_cap = s.activations.hidden_size
    for i, r in enumerate(s.routers):
        if r.label in labels:
            out.append(problem(f"routers[{i}].name", "two routers share this label; give one a distinct name", r.label))
        labels.add(r.label)
        uses_grap = r.kind == "etr" or getattr(r, "gate", None) == "grap"
        if uses_grap and d_cap % m.num_experts:
            out.append(
                problem(
                    "activations.hidden_size",
                    f"GrAP routing (routers[{i}]) needs the captured hidden size divisible by "
                    f"model.num_experts={m.num_experts}",
                    d_cap,
                )
            )
        k = getattr(r, "top_k", None) or getattr(r, "nominations", None)
        if k is not None and k > m.num_experts:
            key = "top_k" if getattr(r, "top_k", None) else "nominations"
            out.append(problem(f"routers[{i}].{key}", f"larger than model.num_experts={m.num_experts}", k))
    return out


def load_scenario(path: str | Path) -> LoadedScenario:
    """Load and fully validate a scenario file (and its topology). Raises ConfigError listing all problems."""
    path = Path(path)
    return load_scenario_dict(read_yaml(path), str(path), path.parent)


def load_scenario_dict(data: dict, source: str, base_dir: str | Path) -> LoadedScenario:
    """Validate an in-memory scenario mapping exactly as ``load_scenario`` validates a file.

    source: the name errors carry (a file, or e.g. ``sweeps/x.yaml point 3``).
    base_dir: the folder relative ``topology.file`` paths and the topology search start from.
    """
    base_dir = Path(base_dir)
    problems: list[Problem] = []
    scenario: Scenario | None = None
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems += problems_from_validation(exc, data)

    topo_ref = data.get("topology") if isinstance(data.get("topology"), dict) else None
    topo_spec, topo_path = None, None
    if topo_ref is not None:
        name, file = topo_ref.get("name"), topo_ref.get("file")
        if (name is None) == (file is None):
            problems.append(problem("topology", "give exactly one of 'name' (library) or 'file'"))
        elif file is not None:
            topo_path = (base_dir / str(file)) if not Path(str(file)).is_absolute() else Path(str(file))
            if not topo_path.is_file():
                problems.append(problem("topology.file", f"no such file ({topo_path})", file))
                topo_path = None
        else:
            topo_path = find_topology(str(name), None, base_dir)
            if topo_path is None:
                problems.append(
                    problem("topology.name", f"unknown topology; library has: {', '.join(library_topologies())}", name)
                )
    if topo_path is not None and scenario is not None:
        overrides = scenario.topology.overrides
        try:
            topo_spec = load_topology(topo_path, scenario.topology.nodes, overrides)
        except TopologyError as exc:
            for p in exc.problems:
                head = p.path.split(".")[0].split("[")[0]
                if head in overrides or (head == "nodes" and scenario.topology.nodes is not None):
                    where = "topology.nodes" if head == "nodes" and head not in overrides else f"topology.overrides.{p.path}"
                    problems.append(Problem(where, p.message, p.value, p.has_value))
                else:
                    problems.append(Problem(f"topology ({exc.file}) {p.path}", p.message, p.value, p.has_value))
    if scenario is not None and topo_spec is not None:
        problems += _cross_checks(scenario, topo_spec)
    if problems:
        raise ConfigError(source, problems)
    assert scenario is not None and topo_spec is not None and topo_path is not None
    return LoadedScenario(scenario, topo_spec, source, str(topo_path))
