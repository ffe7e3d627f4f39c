"""The one place that calls the stages in order.

scenario -> layout -> activations -> routing -> traffic -> collective plans -> step programs ->
SimPy -> records -> metrics. Everything before SimPy is plain data that can be printed and tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from etr_sim.activations import make_batch
from etr_sim.config import LoadedScenario
from etr_sim.config.base import deep_merge
from etr_sim.config.scenario import Scenario
from etr_sim.metrics import step_metrics
from etr_sim.routing.registry import make_router
from etr_sim.seeding import seed_for
from etr_sim.sim import compute as C
from etr_sim.sim.memory import gpu_memory_bytes, stage_params
from etr_sim.sim.step import Comm, Compute, Fused, MoeBlock, StepPrograms, StepRecorder, StepSimulator
from etr_sim.topology import Topology, build_topology
from etr_sim.traffic import group_collectives as GC
from etr_sim.traffic.collectives import plan_collective
from etr_sim.traffic.layout import Layout
from etr_sim.traffic.matrix import dispatch_traffic, expert_rows
from etr_sim.traffic.placement import PLACEMENTS
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


class StepBuilder:
    """Builds the programs of one router at one training stage (no SimPy here)."""

    def __init__(self, s: Scenario, topo: Topology, layout: Layout, activations, router):
        self.s, self.topo, self.layout, self.act, self.router = s, topo, layout, activations, router
        m = s.model
        self.placement = PLACEMENTS[s.placement.kind](m.num_experts, layout.ep, layout.gpus_per_stage)
        self.d_bytes = row_bytes(m.hidden_size, m.dispatch_dtype)
        self.c_bytes = row_bytes(m.hidden_size, m.combine_dtype)
        self.a_bytes = row_bytes(m.hidden_size, m.activation_dtype)
        self.training = s.step.scope == "training_step"
        self.layers = stage_layers(s, layout)

    # -- MoE blocks --------------------------------------------------------------------------------
    def moe_sample(self, stage: int, moe_layer: int, mb_sample: int) -> MoeSample:
        s, m, par, lay = self.s, self.s.model, self.s.parallelism, self.layout
        gpus = lay.stage_gpus(stage)
        node = self.topo.gpu_node_index[gpus]
        batch_seed = seed_for(s.seed, "batch", stage, mb_sample)
        batch = make_batch(self.act, par.tokens_per_gpu, node, batch_seed, moe_layer)
        decision = self.router.route(batch)
        dispatch = dispatch_traffic(decision, batch.src_gpu, self.placement, self.d_bytes, s.collective.dedup, gpus)
        combine = dispatch.transposed("combine", self.c_bytes / self.d_bytes)
        rows = expert_rows(decision, batch.src_gpu, self.placement)  # [G_s, experts per GPU]
        k = s.overlap.moe_chunks
        alg = s.collective.algorithm
        d_plan = GC.scaled(plan_collective(alg, dispatch, self.topo), "dispatch", 1.0 / k)
        c_plan = GC.scaled(plan_collective(alg, combine, self.topo), "combine", 1.0 / k)
        exp_f = C.expert_ffn_time_s(rows / k, m, s.compute)  # [G_s] per chunk
        grad = self.a_bytes
        block_f = MoeBlock(moe_layer, (d_plan,) * k, (exp_f,) * k, (c_plan,) * k)
        block_b = MoeBlock(
            moe_layer,
            (GC.scaled(d_plan, "dispatch", grad / self.d_bytes),) * k,
            (2.0 * exp_f,) * k,
            (GC.scaled(c_plan, "combine", grad / self.c_bytes),) * k,
        )
        sent_rows = dispatch.rows.sum(axis=1)  # [G_s]
        recv_rows = dispatch.rows.sum(axis=0)
        router_s = np.array([C.router_cost_s(par.tokens_per_gpu, r, m, s.compute) for r in sent_rows])
        d_intra, d_inter = dispatch.split_bytes(node)
        c_intra, c_inter = combine.split_bytes(node)
        facts = {
            "pipeline_stage": stage,
            "moe_layer": moe_layer,
            "microbatch_sample": mb_sample,
            "capacity": decision.capacity if decision.capacity is not None else -1,
            "tokens": decision.num_tokens,
            "kept_assignments": decision.num_kept,
            "dropped_assignments": decision.num_dropped,
            "dispatch_intra_bytes": d_intra,
            "dispatch_inter_bytes": d_inter,
            "intra_node_bytes": d_intra + c_intra,
            "inter_node_bytes": d_inter + c_inter,
            "expert_rows_max": float(rows.sum(axis=1).max()),
            "expert_rows_mean": float(rows.sum(axis=1).mean()),
            **decision.stats,
        }
        load = decision.expert_load()
        ratio = float(recv_rows.max() / max(par.tokens_per_gpu, 1))
        return MoeSample(facts, block_f, block_b, router_s, float(rows.sum(axis=1).max()), ratio, load)

    # -- programs --------------------------------------------------------------------------------
    def _tp(self, name: str, stage: int, dp_i_groups) -> Comm:
        tokens = self.s.parallelism.micro_batch_size * self.s.parallelism.seq_len
        return Comm(name, "tp", GC.all_gather(name, dp_i_groups, tokens * self.a_bytes, self.topo))

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
            for j in range(n_layer_samples):
                for k in range(n_samples):
                    smp = self.moe_sample(stage, first_moe + j, k)
                    # How many MoE-block instances of the step this sample stands for.
                    smp.facts["instances"] = len(moe_here) * n_mb / (n_layer_samples * n_samples)
                    cache[j, k] = smp
                    samples.append(smp)
            tp_groups = lay.tp_groups(stage)
            attn_f = C.attention_forward_s(m, tokens, par.seq_len, par.tp, s.compute) * ones
            dense_f = C.dense_ffn_forward_s(m, tokens, par.tp, s.compute) * ones
            shared_f = m.shared_experts * C.expert_ffn_time_s(np.full((g_s, 1), par.tokens_per_gpu), m, s.compute)
            stage_f, stage_b = [], []
            for mb in range(n_mb):
                ops_f, ops_b = [], []
                for li, layer in enumerate(layers):
                    f, b = [], []
                    if self.training:
                        f += self._tp_wrap(stage, tp_groups, Compute("attention", "attention", attn_f))
                        b += self._tp_wrap(stage, tp_groups, Compute("attention", "attention", 2 * attn_f))
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
                        f += self._tp_wrap(stage, tp_groups, Compute("dense_ffn", "dense_ffn", dense_f))
                        b += self._tp_wrap(stage, tp_groups, Compute("dense_ffn", "dense_ffn", 2 * dense_f))
                    ops_f += f
                    ops_b = b + ops_b  # backward runs the layers in reverse
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

    def _tp_wrap(self, stage: int, groups, op: Compute) -> list:
        """TP all-gather before and reduce-scatter after a TP-sharded block (sequence parallelism)."""
        if self.layout.tp == 1:
            return [op]
        ag, rs = self._tp("tp_all_gather", stage, groups), self._tp("tp_reduce_scatter", stage, groups)
        if self.s.overlap.tp_overlap:
            return [Fused(ag, op), rs]
        return [ag, op, rs]

    def _dp_plans(self, stage: int) -> tuple:
        s, lay = self.s, self.layout
        params = stage_params(s.model, s.parallelism, self.layers[stage], stage == 0, stage == lay.pp - 1)
        gb = s.memory.grad_bytes
        return (
            GC.ring_all_reduce("dp_grads", lay.dp_groups(stage), params.dense * gb, self.topo),
            GC.ring_all_reduce("dp_expert_grads", lay.expert_dp_groups(stage), params.expert * gb, self.topo),
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
            params = stage_params(s.model, s.parallelism, layers, stage == 0, stage == lay.pp - 1)
            mem = gpu_memory_bytes(s.model, s.parallelism, s.memory, params, lay.dp, layers, in_flight, ratio, buf)
            if sum(mem.values()) > sum(worst.values(), 0.0):
                worst = {**mem, "pipeline_stage": stage}
        return worst


def training_stages(s: Scenario) -> list[tuple[int, int, object]]:
    """[(first step, number of steps, activation spec)] covering steps 0..training.steps-1."""
    stages = sorted(s.training.stages, key=lambda t: t.step)
    if not stages or stages[0].step > 0:
        points = [(0, {})] + [(t.step, t.activations) for t in stages]
    else:
        points = [(t.step, t.activations) for t in stages]
    out = []
    base = s.activations.model_dump()
    for i, (start, over) in enumerate(points):
        end = points[i + 1][0] if i + 1 < len(points) else s.training.steps
        spec = type(s.activations).model_validate(deep_merge(base, over))
        out.append((start, max(end - start, 0), spec))
    return out


def _simulate(loaded: LoadedScenario, prefix: str, tick) -> tuple[Topology, dict]:
    """Every router at every training stage of one scenario (variant); labels get ``prefix``."""
    s = loaded.scenario
    topo = build_topology(loaded.topology, loaded.topology_source)
    layout = make_layout(s, topo)
    runs: list[RouterStep] = []
    for r_spec in s.routers:
        label = prefix + r_spec.label
        router = make_router(r_spec, s.model, layout.ep, s.activations.hidden_size, s.seed)
        for ti, (start, n_steps, act_spec) in enumerate(training_stages(s)):
            builder = StepBuilder(s, topo, layout, act_spec, router)
            programs, samples = builder.build()
            sim = StepSimulator(programs, topo.capacity_Bps, topo.latency_s, s.overlap.dp_grad_reduce)
            step_s = sim.run()
            facts = [{"router": label, "training_stage": ti, **x.facts} for x in samples]
            load = np.sum([x.expert_load for x in samples], axis=0) if samples else np.zeros(s.model.num_experts)
            runs.append(RouterStep(label, ti, start, n_steps, step_s, sim.rec, facts, builder.memory(samples),
                                   load, sim.net.bytes_carried.copy()))
            tick(f"{label} stage {ti}")
    n_mb = microbatches(s, layout) if s.step.scope == "training_step" else 1
    return topo, step_metrics(s, layout, topo, runs, n_mb, [prefix + r.label for r in s.routers])


def run(loaded: LoadedScenario, progress=None) -> RunResult:
    """Simulate every variant, router and training stage; ``progress(done, total, label)`` is optional."""
    jobs = loaded.runs()
    total = sum(len(sub.scenario.routers) * len(training_stages(sub.scenario)) for _, sub in jobs)
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
                     tables["expert_load"], tables["links"])
