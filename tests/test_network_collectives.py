"""Collective plans: hand-checked flows and byte conservation per algorithm."""

import numpy as np
import pytest
import yaml

from etr_sim.config import load_topology
from etr_sim.config.load import REPO_TOPOLOGIES, load_scenario
from etr_sim.config.topology import TopologySpec
from etr_sim.topology import build_topology
from etr_sim.traffic.collectives import Dispatch, allreduce_plan, dispatch_from_decision, plan_collective
from etr_sim.traffic.matrix import TrafficMatrix


def _tiny(nodes=2, gpus=2):
    return build_topology(TopologySpec.model_validate({
        "name": "tiny", "nodes": nodes,
        "node": {"gpus": gpus, "scale_up": {"kind": "switch", "bandwidth_GBps": 100},
                 "pcie": {"bandwidth_GBps": 50}, "nic": {"bandwidth_gbps": 200}},
        "fabric": {"kind": "rail_optimized", "nodes_per_leaf": 8}}))


def _flows(fs):
    return {(int(s), int(d)): float(b) for s, d, b in zip(fs.src, fs.dst, fs.size_bytes)}


def _matrix(g, seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 4, size=(g, g))
    return TrafficMatrix("dispatch", rows * 10.0, rows)


def _net_bytes(topo, plan):
    nic = np.asarray(topo.link_class) == "nic"
    return plan.link_bytes(topo.num_links)[nic].sum() / 2  # each network flow crosses two NIC links


def test_direct_one_flow_per_pair():
    topo = _tiny()
    m = _matrix(4)
    plan = plan_collective("direct", m, topo)
    off = m.bytes * (1 - np.eye(4))
    assert _flows(plan.stages[0]) == {(s, d): off[s, d] for s, d in zip(*np.nonzero(off))}


def test_pairwise_rounds():
    topo = _tiny()
    m = _matrix(4, 1)
    plan = plan_collective("pairwise", m, topo)
    assert len(plan.stages) == 3
    for r, st in enumerate(plan.stages, start=1):
        assert all(d == (s + r) % 4 for s, d in zip(st.src, st.dst))
    assert plan.total_bytes == pytest.approx(m.total_bytes)


@pytest.mark.parametrize("alg", ["pxn", "hierarchical"])
def test_rail_aligned_algorithms_keep_network_bytes_and_rails(alg):
    topo = _tiny(nodes=3, gpus=4)
    m = _matrix(12, 2)
    plan = plan_collective(alg, m, topo)
    _, inter = m.split_bytes(topo.gpu_node_index)
    assert _net_bytes(topo, plan) == pytest.approx(inter)
    node = topo.gpu_node_index
    for st in plan.stages:
        x = node[st.src] != node[st.dst]
        assert (st.src[x] % 4 == st.dst[x] % 4).all()  # every network flow stays on its rail
    if alg == "hierarchical":
        assert len(plan.stages) == 2 and (node[plan.stages[0].src] == node[plan.stages[0].dst]).all()


def test_deepep_hand_example():
    # 2 nodes x 2 GPUs. token 0 on gpu0 -> gpus 2, 3 ; token 1 on gpu1 -> gpus 0, 2.
    topo = _tiny()
    token = np.array([0, 0, 1, 1])
    dst = np.array([2, 3, 0, 2])
    src_of_token = np.array([0, 1])
    rows = np.zeros((4, 4), dtype=np.int64)
    np.add.at(rows, (src_of_token[token], dst), 1)
    d = dispatch_from_decision(TrafficMatrix("dispatch", rows * 10.0, rows), token, src_of_token, dst, 10.0)
    fl = _flows(plan_collective("deepep", d, topo).stages[0])
    # RDMA: token0 once to node 1 (gpu2, rail 0); token1 once to node 1 (gpu3, rail 1). NVLink: 2->3, 1->0, 3->2
    assert fl == {(0, 2): 10.0, (1, 3): 10.0, (2, 3): 10.0, (1, 0): 10.0, (3, 2): 10.0}
    back = _flows(plan_collective("deepep", d.transposed("combine", 2.0), topo).stages[0])
    assert back == {(b, a): 2 * v for (a, b), v in fl.items()}


def test_deepep_sends_each_token_once_per_node():
    topo = _tiny(nodes=4, gpus=4)
    rng = np.random.default_rng(0)
    n_tok = 64
    token = np.repeat(np.arange(n_tok), 3)
    dst = rng.integers(0, 16, size=len(token))
    src_of_token = rng.integers(0, 16, size=n_tok)
    rows = np.zeros((16, 16), dtype=np.int64)
    np.add.at(rows, (src_of_token[token], dst), 1)
    d = dispatch_from_decision(TrafficMatrix("dispatch", rows * 1.0, rows), token, src_of_token, dst, 1.0)
    node = topo.gpu_node_index
    pairs = {(t, node[g]) for t, g in zip(token, dst) if node[g] != node[src_of_token[t]]}
    assert _net_bytes(topo, plan_collective("deepep", d, topo)) == pytest.approx(len(pairs))
    with pytest.raises(ValueError):
        plan_collective("deepep", d.matrix, topo)


def test_step_collectives():
    topo = _tiny(nodes=2, gpus=4)
    ring = allreduce_plan("ring_allreduce", 8e6, topo)
    assert ring.stages[0].num_flows == 8 and ring.total_bytes == pytest.approx(8 * 2 * 7 / 8 * 8e6)
    tree = allreduce_plan("tree_allreduce", 1e6, topo)
    assert len(tree.stages) == 2 and tree.stages[0].num_flows == 7
    ag = allreduce_plan("allgather", 8e6, topo, gpus=np.arange(4))
    assert ag.total_bytes == pytest.approx(4 * 3 / 4 * 8e6)
    with pytest.raises(ValueError):
        allreduce_plan("broadcast", 1.0, topo)


@pytest.mark.parametrize("alg", ["deepep", "hierarchical", "pxn"])
def test_pipeline_runs_with_algorithm(tmp_path, alg):
    from etr_sim.pipeline import run

    scen = yaml.safe_load((REPO_TOPOLOGIES.parent / "scenarios" / "quickstart.yaml").read_text())
    scen["collective"] = {"algorithm": alg}
    scen["parallelism"]["seq_len"] = 512
    scen["routers"] = scen["routers"][1:2]
    scen["topology"] = {"name": "dgx-h100", "nodes": 2}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(scen))
    res = run(load_scenario(p))
    assert (res.summary.dispatch_s > 0).all() and (res.summary.combine_s > 0).all()
