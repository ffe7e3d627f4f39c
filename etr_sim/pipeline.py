"""The one place that calls the stages in order.

scenario -> layout -> activations -> routing -> traffic -> collective plans -> step programs ->
SimPy -> records -> metrics. Everything before SimPy is plain data that can be printed and tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from etr_sim import invariants
from etr_sim.activations import make_batch
from etr_sim.config import LoadedScenario
from etr_sim.config.scenario import Scenario
from etr_sim.metrics import link_series, step_metrics
from etr_sim.routing.locality import ExpertLocality
from etr_sim.routing.metrics import add_feature_stats
from etr_sim.routing.registry import make_router
from etr_sim.sim import compute as C
from etr_sim.sim.memory import gpu_memory_bytes, stage_params
from etr_sim.sim.step import Comm, Compute, Fused, MoeBlock, StepPrograms, StepRecorder, StepSimulator
from etr_sim.topology import Topology, build_topology
from etr_sim.traffic import group_collectives as GC
from etr_sim.traffic.collectives import dispatch_from_decision, plan_collective
from etr_sim.traffic.layout import Layout
from etr_sim.traffic.matrix import dispatch_traffic, expert_rows
from etr_sim.traffic.placement import NEEDS_DEMAND, Placement, build_placement
from etr_sim.units import DTYPE_BYTES, row_bytes


@dataclass(frozen=True)
class MoeSample:
    """Routing, traffic and timing inputs of one (pipeline stage, MoE layer sample, micro-batch sample)."""

    facts: dict
    block_f: MoeBlock
    block_b: MoeBlock
    router_s: np.ndarray  # [GPUs of stage] router + permutation seconds (forward)
    buffer_rows: float
    rows_ratio: float
    expert_load: np.ndarray  # [E] tokens kept per expert, summed over EP groups


@dataclass(frozen=True)
class RouterStep:
    """One router at one training stage: its programs, simulated records and facts."""

    router: str
    training_stage: int
    step_from: int
    steps: int
    step_s: float
    recorder: StepRecorder
    facts: list[dict]
    memory: dict
    expert_load: np.ndarray
    link_bytes: np.ndarray  # [L] bytes each link carried during the step
    link_series: pd.DataFrame | None = None  # utilisation per link class over the step (first training stage)


@dataclass(frozen=True)
class RunResult:
    loaded: LoadedScenario
    topology: Topology
    summary: pd.DataFrame  # one row per router
    layers: pd.DataFrame  # one row per (router, training stage, pipeline stage, MoE layer sample, micro-batch sample)
    ops: pd.DataFrame  # one row per timed op
    steps: pd.DataFrame  # one row per (router, training stage)
    expert_load: pd.DataFrame  # (router, training stage, expert, tokens)
    links: pd.DataFrame  # (router, training stage, link) bytes and utilisation
    link_series: pd.DataFrame  # (router, t_s, link_class) mean and max utilisation over one step


def make_layout(s: Scenario, topo: Topology) -> Layout:
    par = s.parallelism
    dp = par.dp or topo.num_gpus // (par.tp * par.pp)
    return Layout(par.tp, par.pp, dp, par.ep, par.order)


def stage_layers(s: Scenario, layout: Layout) -> list[list[int]]:
    per = s.model.layers // layout.pp
    return [list(range(i * per, (i + 1) * per)) for i in range(layout.pp)]


def microbatches(s: Scenario, layout: Layout) -> int:
    par = s.parallelism
    gb = par.global_batch or par.micro_batch_size * layout.dp
    return gb // (par.micro_batch_size * layout.dp)


def moe_samples(s: Scenario, layout: Layout) -> dict[int, list[tuple[int, int]]]:
    """(MoE layer index, micro-batch sample) pairs routed for each pipeline stage (see StepSpec)."""
    n_mb = microbatches(s, layout) if s.step.scope == "training_step" else 1
    n_samples = min(s.step.sampled_microbatches, n_mb)
    out, first = {}, 0
    for stage, layers in enumerate(stage_layers(s, layout)):
        n_moe = sum(s.model.is_moe_layer(i) for i in layers)
        out[stage] = [(first + j, k) for j in range(min(s.step.sampled_layers, n_moe)) for k in range(n_samples)]
        first += n_moe
    return out


def expected_nominations(r_spec, model, num_tokens: int) -> int | None:
    """Assignments a router nominates, known before routing: token choice nominates top-k experts for
    every token. Other kinds nominate a data-dependent number (thresholds, expert-side choice)."""
    if r_spec.kind == "token_choice":
        return num_tokens * min(r_spec.top_k or model.top_k, model.num_experts)
    return None


def route_all(s: Scenario, topo: Topology, layout: Layout, activations, routers: list) -> list[dict]:
    """Every router's decision on every sampled batch: [router] -> {(stage, moe layer, sample): (batch, decision)}.

    Each batch is generated once and shown to every router (same tokens for all), then its hidden
    states are dropped (the kept TokenBatch has shape [N, 0]) so memory stays at one batch.
    """
    out: list[dict] = [{} for _ in routers]
    par = s.parallelism
    for stage, pairs in moe_samples(s, layout).items():
        node = topo.gpu_node_index[layout.stage_gpus(stage)]
        locality = None  # demand-driven placements follow routing: routers then assume contiguous experts
        if not (s.placement.kind in NEEDS_DEMAND or s.placement.replicate_hot):
            placed = build_placement(s.placement, s.model.num_experts, layout.ep, layout.gpus_per_stage, node)
            locality = ExpertLocality.from_placement(placed, node)
        for layer, k in pairs:
            batch = make_batch(activations, par.tokens_per_gpu, node, s.seed, layer, sample=k)
            light = batch.without_inputs()
            for i, router in enumerate(routers):
                router.locality = locality  # locality-aware routers see where experts live
                decision = router.route(batch)
                add_feature_stats(decision, batch)
                invariants.check_decision(decision, f"router {s.routers[i].label}, stage {stage}, layer {layer}",
                                          expected_nominations(s.routers[i], s.model, batch.num_tokens))
                out[i][stage, layer, k] = (light, decision)
            del batch
    return out


class StepBuilder:
    """Builds the programs of one router at one training stage from its routed samples (no SimPy here)."""

    def __init__(self, s: Scenario, topo: Topology, layout: Layout, routed: dict):
        self.s, self.topo, self.layout, self.routed = s, topo, layout, routed
        m = s.model
        self.d_bytes = row_bytes(m.hidden_size, m.dispatch_dtype)
        self.c_bytes = row_bytes(m.hidden_size, m.combine_dtype)
        self.a_bytes = row_bytes(m.hidden_size, m.activation_dtype)
        self.training = s.step.scope == "training_step"
        self.layers = stage_layers(s, layout)
        self._tp_cache: dict = {}

    # -- MoE blocks --------------------------------------------------------------------------------
    def placement(self, stage: int, calibration) -> Placement:
        """Expert placement of a stage; demand-driven kinds use the stage's first routing decision."""
        s, lay = self.s, self.layout
        node = self.topo.gpu_node_index[lay.stage_gpus(stage)]
        demand = None
        if s.placement.kind in NEEDS_DEMAND or s.placement.replicate_hot:
            batch, decision = calibration
            flat = batch.src_node[decision.token] * s.model.num_experts + decision.expert
            n_nodes = int(node.max()) + 1
            demand = np.bincount(flat, minlength=n_nodes * s.model.num_experts).reshape(n_nodes, s.model.num_experts)
        return build_placement(s.placement, s.model.num_experts, lay.ep, lay.gpus_per_stage, node, demand)

    def moe_sample(self, stage: int, routed, placement: Placement) -> MoeSample:
        s, m, par, lay = self.s, self.s.model, self.s.parallelism, self.layout
        batch, decision = routed
        gpus = lay.stage_gpus(stage)
        node = self.topo.gpu_node_index[gpus]
        dispatch = dispatch_traffic(decision, batch.src_gpu, placement, self.d_bytes, s.collective.dedup, gpus)
        combine = dispatch.transposed("combine", self.c_bytes / self.d_bytes)
        # per-token destinations for token-level algorithms (deepep); stage-local ids -> global inside
        if s.collective.algorithm == "deepep":
            d_in = dispatch_from_decision(dispatch, decision.token, batch.src_gpu,
                                          placement.gpu_of(batch.src_gpu[decision.token], decision.expert),
                                          self.d_bytes)
            c_in = d_in.transposed("combine", self.c_bytes / self.d_bytes)
        else:
            d_in, c_in = dispatch, combine
        rows = expert_rows(decision, batch.src_gpu, placement)  # [G_s, expert slots per GPU]
        k = s.overlap.moe_chunks
        alg = s.collective.algorithm
        d_plan = GC.scaled(plan_collective(alg, d_in, self.topo), "dispatch", 1.0 / k)
        c_plan = GC.scaled(plan_collective(alg, c_in, self.topo), "combine", 1.0 / k)
        exp_f = C.expert_ffn_time_s(rows / k, m, s.compute)  # [G_s] per chunk
        grad = self.a_bytes
        block_f = MoeBlock(batch.layer, (d_plan,) * k, (exp_f,) * k, (c_plan,) * k)
        block_b = MoeBlock(
            batch.layer,
            (GC.scaled(d_plan, "dispatch", grad / self.d_bytes),) * k,
            (2.0 * exp_f,) * k,
            (GC.scaled(c_plan, "combine", grad / self.c_bytes),) * k,
        )
        sent_rows = dispatch.rows.sum(axis=1)  # [G_s]
        recv_rows = dispatch.rows.sum(axis=0)
        router_s = np.array([C.router_cost_s(par.tokens_per_gpu, r, m, s.compute) for r in sent_rows])
        d_intra, d_inter = dispatch.split_bytes(node)
        c_intra, c_inter = combine.split_bytes(node)
        domain = self.topo.routes.domain[gpus] if self.topo.routes is not None else node
        d_out = dispatch.split_bytes(domain)[1]
        c_out = combine.split_bytes(domain)[1]
        dst_node = node[placement.gpu_of(batch.src_gpu[decision.token], decision.expert)]
        facts = {
            "pipeline_stage": stage,
            "moe_layer": batch.layer,
            "capacity": decision.capacity if decision.capacity is not None else -1,
            "tokens": decision.num_tokens,
            "kept_assignments": decision.num_kept,
            "dropped_assignments": decision.num_dropped,
            "dispatch_intra_node_bytes": d_intra,
            "dispatch_inter_node_bytes": d_inter,
            "intra_node_bytes": d_intra + c_intra,
            "inter_node_bytes": d_inter + c_inter,
            "dispatch_scale_out_bytes": d_out,
            "scale_out_bytes": d_out + c_out,
            "node_local_fraction": float((dst_node == batch.src_node[decision.token]).mean()) if decision.num_kept else 0.0,
            "expert_rows_max": float(rows.sum(axis=1).max()),
            "expert_rows_mean": float(rows.sum(axis=1).mean()),
            "expert_slots_per_gpu": placement.slots_per_gpu,
            **decision.stats,
        }
        load = decision.expert_load()
        ratio = float(recv_rows.max() / max(par.tokens_per_gpu, 1))
        return MoeSample(facts, block_f, block_b, router_s, float(rows.sum(axis=1).max()), ratio, load)

    # -- programs --------------------------------------------------------------------------------
    def _tp(self, name: str, stage: int) -> Comm:
        """TP all-gather / reduce-scatter of one micro-batch's activations (same plan every layer)."""
        key = (name, stage)
        if key not in self._tp_cache:
            tokens = self.s.parallelism.micro_batch_size * self.s.parallelism.seq_len
            plan = GC.all_gather(name, self.layout.tp_groups(stage), tokens * self.a_bytes, self.topo,
                                 self.s.collective.tp_algorithm)
            self._tp_cache[key] = Comm(name, "tp", plan)
        return self._tp_cache[key]

    def build(self) -> tuple[StepPrograms, list[MoeSample]]:
        s, m, par, lay = self.s, self.s.model, self.s.parallelism, self.layout
        n_mb = microbatches(s, lay) if self.training else 1
        n_samples = min(s.step.sampled_microbatches, n_mb)
        g_s = lay.gpus_per_stage
        tokens = par.micro_batch_size * par.seq_len  # per micro-batch, per model replica
        ones = np.ones(g_s)
        samples: list[MoeSample] = []
        fwd, bwd, p2p_f, p2p_b, dp = [], [], [], [], []
        moe_index = 0
        for stage, layers in enumerate(self.layers):
            moe_here = [i for i in layers if m.is_moe_layer(i)]
            first_moe = moe_index
            moe_index += len(moe_here)
            n_layer_samples = min(s.step.sampled_layers, len(moe_here)) if moe_here else 0
            cache = {}
            routed = {(j, k): self.routed[stage, first_moe + j, k]
                      for j in range(n_layer_samples) for k in range(n_samples)}
            placement = self.placement(stage, routed[0, 0]) if routed else None
            for j in range(n_layer_samples):
                for k in range(n_samples):
                    smp = self.moe_sample(stage, routed[j, k], placement)
                    smp.facts["microbatch_sample"] = k
                    # How many MoE-block instances of the step this sample stands for.
                    smp.facts["instances"] = len(moe_here) * n_mb / (n_layer_samples * n_samples)
                    cache[j, k] = smp
                    samples.append(smp)
            attn_f = C.attention_forward_s(m, tokens, par.seq_len, par.tp, s.compute) * ones
            dense_f = C.dense_ffn_forward_s(m, tokens, par.tp, s.compute) * ones
            shared_f = m.shared_experts * C.expert_ffn_time_s(np.full((g_s, 1), par.tokens_per_gpu), m, s.compute)
            stage_f, stage_b = [], []
            recompute = self.training and s.memory.activation_recompute == "full"
            for mb in range(n_mb):
                ops_f, ops_b = [], []
                for li, layer in enumerate(layers):
                    f, b = [], []
                    if self.training:
                        f += self._tp_wrap(stage, Compute("attention", "attention", attn_f))
                        b += self._tp_wrap(stage, Compute("attention", "attention", 2 * attn_f))
                    if m.is_moe_layer(layer):
                        smp = cache[moe_here.index(layer) % n_layer_samples, mb % n_samples]
                        if s.step.include_router_cost:
                            f.append(Compute("router", "router", smp.router_s))
                        f.append(smp.block_f)
                        b.append(smp.block_b)
                        if m.shared_experts:
                            f.append(Compute("shared_experts", "experts", shared_f))
                            b.append(Compute("shared_experts", "experts", 2 * shared_f))
                        if s.step.include_router_cost:
                            f.append(Compute("unpermute", "router", smp.router_s))
                            b.append(Compute("router_grad", "router", 2 * smp.router_s))
                    elif self.training:
                        f += self._tp_wrap(stage, Compute("dense_ffn", "dense_ffn", dense_f))
                        b += self._tp_wrap(stage, Compute("dense_ffn", "dense_ffn", 2 * dense_f))
                    ops_f += f
                    # Backward runs the layers in reverse; full recompute replays each layer's forward first.
                    ops_b = (f + b if recompute else b) + ops_b
                if self.training and stage == lay.pp - 1:
                    head = C.lm_head_forward_s(m, tokens, par.tp, s.compute) * ones
                    ops_f.append(Compute("lm_head", "lm_head", head))
                    ops_b.insert(0, Compute("lm_head", "lm_head", 2 * head))
                stage_f.append(tuple(ops_f))
                stage_b.append(tuple(ops_b))
            fwd.append(stage_f)
            bwd.append(stage_b)
            dp.append(self._dp_plans(stage) if self.training else ())
        act = par.tokens_per_gpu * self.a_bytes
        for stage in range(lay.pp):
            nxt = GC.p2p("pp_send", lay.stage_gpus(stage), lay.stage_gpus(stage + 1), act, self.topo) if stage < lay.pp - 1 else None
            prv = GC.p2p("pp_recv", lay.stage_gpus(stage), lay.stage_gpus(stage - 1), act, self.topo) if stage > 0 else None
            p2p_f.append([nxt] * n_mb)
            p2p_b.append([prv] * n_mb)
        if not self.training:  # MoE blocks only, one forward pass: chain every stage's blocks
            flat = tuple(op for st in fwd for op in st[0])
            return StepPrograms([[flat]], [[()]], [[None]], [[None]], [()], s.step.pipeline_schedule), samples
        return StepPrograms(fwd, bwd, p2p_f, p2p_b, dp, s.step.pipeline_schedule), samples

    def _tp_wrap(self, stage: int, op: Compute) -> list:
        """TP all-gather before and reduce-scatter after a TP-sharded block (sequence parallelism)."""
        if self.layout.tp == 1:
            return [op]
        ag, rs = self._tp("tp_all_gather", stage), self._tp("tp_reduce_scatter", stage)
        if self.s.overlap.tp_overlap:
            return [Fused(ag, op), rs]
        return [ag, op, rs]

    def _dp_plans(self, stage: int) -> tuple:
        s, lay = self.s, self.layout
        params = stage_params(s.model, s.parallelism, self.layers[stage], stage == 0, stage == lay.pp - 1)
        gb, alg = s.memory.grad_bytes, s.collective.dp_algorithm
        return (
            GC.over_groups(alg, "dp_grads", lay.dp_groups(stage), params.dense * gb, self.topo),
            GC.over_groups(alg, "dp_expert_grads", lay.expert_dp_groups(stage), params.expert * gb, self.topo),
        )

    def memory(self, samples: list[MoeSample]) -> dict:
        """Per-GPU memory of the most loaded stage (stage 0 holds the most micro-batches in flight)."""
        s, lay = self.s, self.layout
        n_mb = microbatches(s, lay) if self.training else 1
        worst: dict = {}
        for stage, layers in enumerate(self.layers):
            mine = [x for x in samples if x.facts["pipeline_stage"] == stage] or samples
            ratio = max((x.rows_ratio for x in mine), default=1.0)
            buf = max((x.buffer_rows for x in mine), default=0.0)
            in_flight = min(lay.pp - stage, n_mb) if s.step.pipeline_schedule == "1f1b" else n_mb
            slots = max((x.facts["expert_slots_per_gpu"] for x in mine), default=None)
            params = stage_params(s.model, s.parallelism, layers, stage == 0, stage == lay.pp - 1, slots)
            mem = gpu_memory_bytes(s.model, s.parallelism, s.memory, params, lay.dp, layers, in_flight, ratio, buf)
            if sum(mem.values()) > sum(worst.values(), 0.0):
                worst = {**mem, "pipeline_stage": stage}
        return worst


def _simulate(loaded: LoadedScenario, prefix: str, tick) -> tuple[Topology, dict]:
    """Every router at every training stage of one scenario (variant); labels get ``prefix``."""
    s = loaded.scenario
    topo = build_topology(loaded.topology, loaded.topology_source)
    layout = make_layout(s, topo)
    runs: list[RouterStep] = []
    routers = [make_router(r, s.model, layout.ep, s.activations.hidden_size, s.seed) for r in s.routers]
    for ti, (start, n_steps, act_spec) in enumerate(loaded.training_stages):
        # Routers keep state across training stages (first-batch and dynamic capacity): each sees
        # its batches in the same order whatever the number of routers.
        routed = route_all(s, topo, layout, act_spec, routers)
        for r_spec, mine in zip(s.routers, routed):
            label = prefix + r_spec.label
            builder = StepBuilder(s, topo, layout, mine)
            programs, samples = builder.build()
            net_options = {"message_overhead_s": topo.message_overhead_s, "coalesce_rel": s.collective.coalesce_rel,
                           "rate_tol_rel": s.collective.rate_tol_rel, "link_class": topo.link_class}
            sim = StepSimulator(programs, topo.capacity_Bps, topo.latency_s, s.overlap.dp_grad_reduce, net_options)
            step_s = sim.run()
            facts = [{"router": label, "training_stage": ti, **x.facts} for x in samples]
            load = np.sum([x.expert_load for x in samples], axis=0) if samples else np.zeros(s.model.num_experts)
            series = link_series(sim.net.class_samples, sim.net.classes, step_s) if ti == 0 else None
            runs.append(RouterStep(label, ti, start, n_steps, step_s, sim.rec, facts, builder.memory(samples),
                                   load, sim.net.bytes_carried.copy(), series))
            tick(f"{label} stage {ti}")
    runs.sort(key=lambda r: [x.label for x in s.routers].index(r.router[len(prefix):]))
    n_mb = microbatches(s, layout) if s.step.scope == "training_step" else 1
    return topo, step_metrics(s, layout, topo, runs, n_mb, [prefix + r.label for r in s.routers])


def run(loaded: LoadedScenario, progress=None) -> RunResult:
    """Simulate every variant, router and training stage; ``progress(done, total, label)`` is optional."""
    jobs = loaded.runs()
    total = sum(len(sub.scenario.routers) * len(sub.training_stages) for _, sub in jobs)
    done = [0]

    def tick(label: str) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total, label)

    parts = [_simulate(sub, prefix, tick) for prefix, sub in jobs]
    tables = {k: pd.concat([p[1][k] for p in parts], ignore_index=True) for k in parts[0][1]}
    summary = tables["summary"]
    summary["speedup_vs_first"] = summary.step_s.iloc[0] / summary.step_s
    return RunResult(loaded, parts[0][0], summary, tables["layers"], tables["ops"], tables["steps"],
                     tables["expert_load"], tables["links"], tables["link_series"])
