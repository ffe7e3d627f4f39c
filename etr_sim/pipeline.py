"""The one place that calls the stages in order.

scenario -> activations -> routing -> traffic -> collective plans -> SimPy -> records -> metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from etr_sim.activations import make_batch
from etr_sim.config import LoadedScenario
from etr_sim.config.scenario import CollectiveSpec
from etr_sim.metrics import layer_frame, phase_frame, summary_frame
from etr_sim.routing import make_router
from etr_sim.sim.compute import expert_ffn_time_s
from etr_sim.sim.flownet import FlowNetwork
from etr_sim.sim.layer import moe_layer
from etr_sim.sim.recorder import Recorder
from etr_sim.topology import Topology, build_topology
from etr_sim.traffic.collectives import CollectivePlan, dispatch_from_decision, plan_collective
from etr_sim.traffic.matrix import dispatch_traffic, expert_rows
from etr_sim.traffic.placement import PLACEMENTS
from etr_sim.units import row_bytes


@dataclass(frozen=True)
class LayerWork:
    """Everything computed before SimPy for one (router, MoE layer)."""

    router: str
    layer: int
    facts: dict
    dispatch: CollectivePlan
    combine: CollectivePlan
    expert_s: np.ndarray  # [G]


@dataclass(frozen=True)
class RunResult:
    loaded: LoadedScenario
    topology: Topology
    summary: pd.DataFrame  # one row per router
    layers: pd.DataFrame  # one row per (router, layer)
    phases: pd.DataFrame  # one row per recorded span
    recorder: Recorder


def prepare(loaded: LoadedScenario, topo: Topology) -> list[LayerWork]:
    """Routing, traffic and plans for every router and MoE layer (no SimPy yet)."""
    s = loaded.scenario
    m, par = s.model, s.parallelism
    placement = PLACEMENTS[s.placement.kind](m.num_experts, par.ep, topo.num_gpus)
    d_bytes, c_bytes = row_bytes(m.hidden_size, m.dispatch_dtype), row_bytes(m.hidden_size, m.combine_dtype)
    routers = [make_router(r, m, par.ep, s.activations.hidden_size, s.seed) for r in s.routers]
    work: list[LayerWork] = []
    for layer in range(m.moe_layers):
        batch = make_batch(s.activations, par.tokens_per_gpu, topo.gpu_node_index, s.seed, layer)
        for router in routers:
            decision = router.route(batch)
            dispatch = dispatch_traffic(decision, batch.src_gpu, placement, d_bytes, s.collective.dedup)
            combine = dispatch.transposed("combine", c_bytes / d_bytes)
            d_in = dispatch_from_decision(dispatch, decision.token, batch.src_gpu,
                                          placement.gpu_of(batch.src_gpu[decision.token], decision.expert), d_bytes)
            c_in = d_in.transposed("combine", c_bytes / d_bytes)
            d_intra, d_inter = dispatch.split_bytes(topo.gpu_node_index)
            c_intra, c_inter = combine.split_bytes(topo.gpu_node_index)
            facts = {
                "router": router.spec.label,
                "layer": layer,
                "kind": router.kind,
                "capacity": decision.capacity if decision.capacity is not None else -1,
                "tokens": decision.num_tokens,
                "kept_assignments": decision.num_kept,
                "dropped_assignments": decision.num_dropped,
                "intra_node_bytes": d_intra + c_intra,
                "inter_node_bytes": d_inter + c_inter,
                **decision.stats,
            }
            rows = expert_rows(decision, batch.src_gpu, placement)
            work.append(
                LayerWork(
                    router.spec.label,
                    layer,
                    facts,
                    plan_collective(s.collective.algorithm, d_in, topo),
                    plan_collective(s.collective.algorithm, c_in, topo),
                    expert_ffn_time_s(rows, m, s.compute),
                )
            )
    return work


def simulate(work: list[LayerWork], topo: Topology, coll: CollectiveSpec | None = None) -> Recorder:
    """Time every router on its own copy of the cluster (one SimPy environment per router)."""
    coll = coll or CollectiveSpec()
    rec = Recorder()
    for label in dict.fromkeys(w.router for w in work):
        env = simpy.Environment()
        net = FlowNetwork(env, topo.capacity_Bps, topo.latency_s, topo.message_overhead_s, coll.coalesce_rel,
                          coll.rate_tol_rel)
        mine = [w for w in work if w.router == label]

        def layers(env=env, net=net, mine=mine):
            for w in mine:
                yield env.process(moe_layer(env, net, rec, w.router, w.layer, w.dispatch, w.expert_s, w.combine))

        env.process(layers())
        env.run()
    return rec


def run(loaded: LoadedScenario) -> RunResult:
    topo = build_topology(loaded.topology, loaded.topology_source)
    work = prepare(loaded, topo)
    rec = simulate(work, topo, loaded.scenario.collective)
    phases = phase_frame(rec)
    layers = layer_frame(phases, pd.DataFrame([w.facts for w in work]))
    summary = summary_frame(layers, [r.label for r in loaded.scenario.routers])
    return RunResult(loaded, topo, summary, layers, phases, rec)
