"""Load a scenario and its topology, validate everything, and report all problems at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from etr_sim.config.base import deep_merge, problems_from_validation, read_yaml, validate
from etr_sim.config.scenario import ActivationSpec, Scenario
from etr_sim.config.topology import NODE_TEMPLATES, TopologySpec, check_size
from etr_sim.errors import ConfigError, Problem, TopologyError, problem
from pydantic import TypeAdapter, ValidationError

REPO_TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario with its resolved topology. ``resolved`` is what gets written next to results."""

    scenario: Scenario
    topology: TopologySpec
    source: str
    topology_source: str
    variants: tuple["LoadedScenario", ...] = ()
    training_stages: tuple = ()  # (first step, steps, activation spec) per training stage

    @property
    def resolved(self) -> dict:
        data = self.scenario.model_dump(mode="json")
        data["topology"] = {"resolved_from": self.topology_source, **self.topology.model_dump(mode="json")}
        if self.variants:
            data["variants"] = [{"name": v.scenario.name, **v.resolved} for v in self.variants]
        return data

    def runs(self) -> list[tuple[str, "LoadedScenario"]]:
        """(label prefix, scenario) to simulate: the variants when there are any, else this scenario."""
        if not self.variants:
            return [("", self)]
        return [(v.scenario.name.rsplit(".", 1)[-1] + "/", v) for v in self.variants]


def topology_search_path(scenario_file: Path | None) -> list[Path]:
    paths = []
    if scenario_file is not None:
        paths += [scenario_file.parent / "topologies", scenario_file.parent.parent / "topologies"]
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


def find_topology(name: str, scenario_file: Path | None) -> Path | None:
    for folder in topology_search_path(scenario_file):
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def _merge_node(template: dict, node: dict) -> dict:
    """Template fields overridden by the file's; a scale_up of another kind replaces the template's."""
    out = deep_merge(template, {k: v for k, v in node.items() if k != "scale_up"})
    su = node.get("scale_up")
    if isinstance(su, dict):
        same = su.get("kind", template["scale_up"]["kind"]) == template["scale_up"]["kind"]
        out["scale_up"] = deep_merge(template["scale_up"], su) if same else su
    return out


def resolve_topology_data(data: dict, file: str, nodes: int | None = None, overrides: dict | None = None) -> dict:
    """Apply cluster size, overrides and the node template (unknown template -> TopologyError)."""
    if nodes is not None:
        data = {**data, "nodes": nodes}
    data = deep_merge(data, overrides or {})
    node = data.get("node")
    if isinstance(node, dict) and node.get("template") is not None:
        name = node["template"]
        if not isinstance(name, str) or name not in NODE_TEMPLATES:
            raise TopologyError(file, problem(
                "node.template", f"unknown node template; known: {', '.join(sorted(NODE_TEMPLATES))}", name))
        data = {**data, "node": _merge_node(NODE_TEMPLATES[name], node)}
    return data


def load_topology(path: str | Path, nodes: int | None = None, overrides: dict | None = None) -> TopologySpec:
    """Read a topology file, apply the cluster size, overrides and node template, and validate."""
    data = resolve_topology_data(read_yaml(path), str(path), nodes, overrides)
    spec = validate(TopologySpec, data, str(path), TopologyError)
    check_size(spec, str(path))  # cheap: refuses clusters the builder cannot hold before building
    return spec


def _cross_checks(s: Scenario, topo: TopologySpec) -> list[Problem]:
    """Checks that span several fields; each names the field a user would change."""
    out: list[Problem] = []
    m, par = s.model, s.parallelism
    gpus = topo.nodes * topo.node.gpus
    if m.num_experts % par.ep:
        out.append(problem("parallelism.ep", f"model.num_experts={m.num_experts} is not divisible by ep", par.ep))
    par_tp_pp = par.tp * par.pp
    if gpus % par_tp_pp:
        out.append(problem("parallelism.tp", f"tp*pp={par_tp_pp} does not divide the topology's {gpus} GPUs", par.tp))
    else:
        dp = par.dp or gpus // par_tp_pp
        if par.dp is not None and par.tp * par.pp * par.dp != gpus:
            out.append(problem("parallelism.dp", f"tp*pp*dp must equal the topology's {gpus} GPUs", par.dp))
        if dp % par.ep:
            out.append(problem("parallelism.ep", f"ep must divide the data-parallel size {dp}", par.ep))
        if par.global_batch is not None and par.global_batch % (par.micro_batch_size * dp):
            out.append(problem("parallelism.global_batch",
                               f"not a multiple of micro_batch_size*dp={par.micro_batch_size * dp}", par.global_batch))
    if m.layers % par.pp:
        out.append(problem("parallelism.pp", f"does not divide the model's {m.layers} layers", par.pp))
    if m.moe_layers > m.layers:
        out.append(problem("model.moe_layers", f"more than model.num_layers={m.layers}", m.moe_layers))
    if par.sequence_parallel and par.seq_len * par.micro_batch_size % par.tp:
        out.append(problem("parallelism.seq_len", f"sequence parallelism needs tokens divisible by tp={par.tp}", par.seq_len))
    if m.num_attention_heads % m.num_kv_heads:
        out.append(problem("model.num_kv_heads", f"must divide num_attention_heads={m.num_attention_heads}", m.num_kv_heads))
    if m.top_k > m.num_experts:
        out.append(problem("model.top_k", f"larger than model.num_experts={m.num_experts}", m.top_k))
    for key in ("gemm_dtype", "expert_gemm_dtype"):
        dtype = getattr(s.compute, key)
        if dtype not in ("bf16", "fp16") and dtype not in s.compute.peak_tflops_by_dtype:
            out.append(problem(f"compute.{key}", f"no peak for {dtype}: add compute.peak_tflops_by_dtype.{dtype}", dtype))
    pl = s.placement
    if pl.kind == "explicit":
        if pl.expert_ranks is None or len(pl.expert_ranks) != m.num_experts:
            out.append(problem("placement.expert_ranks", f"explicit placement needs one EP rank per expert ({m.num_experts})",
                               pl.expert_ranks))
        elif max(pl.expert_ranks) >= par.ep:
            out.append(problem("placement.expert_ranks", f"ranks must be below ep={par.ep}", max(pl.expert_ranks)))
    elif pl.expert_ranks is not None:
        out.append(problem("placement.expert_ranks", f"only used with kind 'explicit' (kind is {pl.kind!r})", pl.expert_ranks))
    if pl.replicate_hot > m.num_experts:
        out.append(problem("placement.replicate_hot", f"more than model.num_experts={m.num_experts}", pl.replicate_hot))
    if pl.replicate_hot and par.ep < 2:
        out.append(problem("placement.replicate_hot", "replicas need ep >= 2 (another rank to hold them)", pl.replicate_hot))
    labels: set[str] = set()
    d_cap = s.activations.hidden_size
    for i, r in enumerate(s.routers):
        if r.label in labels:
            out.append(problem(f"routers[{i}].name", "two routers share this label; give one a distinct name", r.label))
        labels.add(r.label)
        uses_grap = r.kind in ("etr", "locmoe") or getattr(r, "gate", None) == "grap"
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


def _load_dict(data: dict, path: Path) -> tuple[LoadedScenario | None, list[Problem]]:
    """Validate one scenario mapping; ``path`` names it in errors and anchors relative files."""
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
            topo_path = (path.parent / str(file)) if not Path(str(file)).is_absolute() else Path(str(file))
            if not topo_path.is_file():
                problems.append(problem("topology.file", f"no such file ({topo_path})", file))
                topo_path = None
        else:
            topo_path = find_topology(str(name), path)
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
    stage_specs: list = []
    if scenario is not None:
        stage_specs, stage_problems = _training_activations(data, scenario)
        problems += stage_problems
    if problems or scenario is None or topo_spec is None or topo_path is None:
        return None, problems
    return LoadedScenario(scenario, topo_spec, str(path), str(topo_path), (), tuple(stage_specs)), []


def _training_activations(data: dict, scenario: Scenario) -> tuple[list, list[Problem]]:
    """[(first step, steps, activation spec)] per training stage, each stage's overrides merged into the
    scenario's raw ``activations`` mapping and validated (problems under training.stages[i])."""
    stages = sorted(enumerate(scenario.training.stages), key=lambda t: t[1].step)
    points = [(i, t.step, t.activations) for i, t in stages]
    if not points or points[0][1] > 0:
        points = [(None, 0, {})] + points
    adapter = TypeAdapter(ActivationSpec)
    raw = data.get("activations", {})
    out, problems = [], []
    for n, (index, start, over) in enumerate(points):
        end = points[n + 1][1] if n + 1 < len(points) else scenario.training.steps
        if end <= start:
            problems.append(problem(f"training.stages[{index}].step", f"not below training.steps={scenario.training.steps}", start))
            continue
        merged = deep_merge(raw, over)
        try:
            spec = adapter.validate_python(merged)
        except ValidationError as exc:
            for p in problems_from_validation(exc, merged):
                problems.append(Problem(f"training.stages[{index}].activations.{p.path}", p.message, p.value, p.has_value))
            continue
        out.append((start, end - start, spec))
    steps = [t.step for t in scenario.training.stages]
    if len(set(steps)) != len(steps):
        problems.append(problem("training.stages", "two stages start at the same step", steps))
    return out, problems


def load_scenario_dict(data: dict, source: str | Path, base_dir: Path | None = None) -> LoadedScenario:
    """Validate an in-memory scenario (a sweep point, a variant). ``source`` names it in errors;
    relative topology files resolve from ``base_dir`` (default: the folder of ``source``).

    Each entry of ``variants`` (a name and overrides deep-merged into the scenario) is validated
    too and returned in ``LoadedScenario.variants``; its problems are reported under
    ``variants[i].overrides``.
    """
    source = Path(source)
    anchor = (base_dir / source.name) if base_dir is not None else source
    base = {k: v for k, v in data.items() if k != "variants"}
    loaded, problems = _load_dict(data, anchor)
    variants: list[LoadedScenario] = []
    raw_variants = data.get("variants") or []
    if loaded is not None and isinstance(raw_variants, list):
        for i, v in enumerate(loaded.scenario.variants):
            over = raw_variants[i].get("overrides", {}) if isinstance(raw_variants[i], dict) else {}
            merged = deep_merge(base, over)
            merged["name"] = f"{base.get('name')}.{v.name}"
            sub, sub_problems = _load_dict(merged, anchor)
            for p in sub_problems:
                problems.append(Problem(f"variants[{i}].overrides (merged) {p.path}", p.message, p.value, p.has_value))
            if sub is not None:
                variants.append(sub)
    if problems:
        raise ConfigError(str(source), problems)
    assert loaded is not None
    return LoadedScenario(loaded.scenario, loaded.topology, str(source), loaded.topology_source, tuple(variants),
                          loaded.training_stages)


def load_scenario(path: str | Path) -> LoadedScenario:
    """Load and fully validate a scenario file (and its topology). Raises ConfigError listing all problems."""
    path = Path(path)
    return load_scenario_dict(read_yaml(path), path)
