"""Conservation invariants: tokens, rows and bytes are neither created nor lost between stages."""

import numpy as np
import pytest
import simpy

from etr_sim.activations import make_batch
from etr_sim.config import load_scenario
from etr_sim.config.scenario import EtrRouter, ExpertChoiceRouter, ModelSpec, SyntheticActivations, TokenChoiceRouter
from etr_sim.routing.registry import make_router
from etr_sim.sim.flownet import FlowNetwork
from etr_sim.topology import build_topology
from etr_sim.traffic.collectives import plan_collective
from etr_sim.traffic.matrix import dispatch_traffic, expert_rows
from etr_sim.traffic.placement import contiguous

MODEL = ModelSpec(num_experts=16, top_k=2, hidden_size=1024, ffn_hidden_size=2048)
ROUTERS = [
    TokenChoiceRouter(kind="token_choice", capacity_factor=1.0, padded=True),
    TokenChoiceRouter(kind="token_choice", capacity_factor=1.0, drop_policy="arrival", padded=False),
    TokenChoiceRouter(kind="token_choice", capacity_factor=None),
    ExpertChoiceRouter(kind="expert_choice"),
    EtrRouter(kind="etr"),
    EtrRouter(kind="etr", capacity={"rule": "fixed", "tokens": 20}, capacity_scope="global"),
]


@pytest.fixture(scope="module")
def batch():
    gpu_node = np.repeat(np.arange(2), 8)
    return make_batch(SyntheticActivations(kind="synthetic", hidden_size=64, popularity_skew=1.5), 128, gpu_node, 7)


@pytest.mark.parametrize("spec", ROUTERS, ids=lambda s: f"{s.kind}")
def test_routing_conservation_and_capacity(batch, spec):
    dec = make_router(spec, MODEL, 16, 64, 0).route(batch)
    if spec.kind != "expert_choice":
        assert dec.num_kept + dec.num_dropped == batch.num_tokens * MODEL.top_k  # kept + dropped = nominated
    pairs = dec.token * MODEL.num_experts + dec.expert
    assert len(np.unique(pairs)) == len(pairs)  # no (token, expert) twice
    if dec.capacity is not None:
        assert dec.group_expert_load().max() <= dec.capacity
    if spec.kind == "expert_choice":
        assert (dec.group_expert_load() == min(dec.capacity, 128)).all()


@pytest.mark.parametrize("dedup", ["gpu", "none"])
def test_traffic_rows_match_decision_and_bytes_are_delivered(batch, dedup):
    model = ModelSpec(num_experts=32, top_k=4, hidden_size=1024, ffn_hidden_size=2048)  # 2 experts per GPU
    dec = make_router(EtrRouter(kind="etr"), model, 16, 64, 0).route(batch)
    placement = contiguous(32, 16, 16)
    m = dispatch_traffic(dec, batch.src_gpu, placement, 2048.0, dedup)
    dst = placement.gpu_of(batch.src_gpu[dec.token], dec.expert)
    expected_rows = len(np.unique(dec.token * 16 + dst)) if dedup == "gpu" else dec.num_kept
    assert m.rows.sum() == expected_rows
    assert m.bytes.sum() == pytest.approx(expected_rows * 2048.0)
    # Every kept assignment is computed exactly once by its expert's GPU.
    assert expert_rows(dec, batch.src_gpu, placement).sum() == dec.num_kept

    spec = load_scenario("scenarios/quickstart.yaml").topology
    topo = build_topology(spec)
    plan = plan_collective("direct", m, topo)
    env = simpy.Environment()
    net = FlowNetwork(env, topo.capacity_Bps, topo.latency_s)
    stage = plan.stages[0]
    done = net.transfer(stage.size_bytes, stage.offsets, stage.links)
    env.run(done)
    assert stage.size_bytes.sum() == pytest.approx(m.total_bytes)  # bytes sent = bytes received off the diagonal
    hops = np.diff(stage.offsets)
    assert net.bytes_carried.sum() == pytest.approx((stage.size_bytes * hops).sum())
    assert np.isfinite(done.value).all()
