"""SimPy processes of one MoE layer: dispatch all-to-all, expert compute per GPU, combine all-to-all.

Phases are separated by barriers: NCCL all-to-all is one kernel on every rank, so a rank's experts
start when the whole exchange has finished, and the combine starts when every GPU's experts are done
(the slowest expert gates the layer).
"""

from __future__ import annotations

import numpy as np
import simpy

from etr_sim.sim.flownet import FlowNetwork
from etr_sim.sim.recorder import FlowStageRecord, PhaseRecord, Recorder
from etr_sim.traffic.collectives import CollectivePlan


def run_collective(env: simpy.Environment, net: FlowNetwork, rec: Recorder, router: str, layer: int,
                   plan: CollectivePlan):
    """Run the plan's stages one after another; record each stage's flows and the phase span."""
    start = env.now
    for i, stage in enumerate(plan.stages):
        stage_start = env.now
        delivered = yield net.transfer(stage.size_bytes, stage.offsets, stage.links)
        rec.flows.append(FlowStageRecord(router, layer, plan.name, i, stage_start, stage.src, stage.dst,
                                         stage.size_bytes, delivered))
    rec.phases.append(PhaseRecord(router, layer, plan.name, -1, start, env.now))


def gpu_compute(env: simpy.Environment, rec: Recorder, router: str, layer: int, gpu: int, seconds: float):
    start = env.now
    yield env.timeout(seconds)
    rec.phases.append(PhaseRecord(router, layer, "expert_compute", gpu, start, env.now))


def moe_layer(env: simpy.Environment, net: FlowNetwork, rec: Recorder, router: str, layer: int,
              dispatch: CollectivePlan, expert_s: np.ndarray, combine: CollectivePlan):
    """One MoE layer. expert_s: [G] seconds of expert GEMMs on each GPU."""
    yield env.process(run_collective(env, net, rec, router, layer, dispatch))
    start = env.now
    yield env.all_of([env.process(gpu_compute(env, rec, router, layer, g, float(t))) for g, t in enumerate(expert_s)])
    rec.phases.append(PhaseRecord(router, layer, "expert_compute", -1, start, env.now))
    yield env.process(run_collective(env, net, rec, router, layer, combine))
