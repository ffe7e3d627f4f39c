"""Calibration against published measurements (../shared/docs/calibration.md); prediction errors printed.

The NCCL figures fix each link class's efficiency (documented in the topology files), so those tests
check that the model's structure (one NIC per GPU, NVSwitch ports, no double counting, latency)
reproduces the rules at other sizes. DeepEP EP8/EP16 are the independent checks.
"""

import numpy as np
import pytest
import simpy

from etr_sim.config import load_topology
from etr_sim.config.load import REPO_TOPOLOGIES
from etr_sim.sim.flownet import FlowNetwork
from etr_sim.topology import build_topology
from etr_sim.traffic.collectives import Dispatch, plan_collective
from etr_sim.traffic.matrix import TrafficMatrix

TARGET = 0.15


def _topo(name, nodes, **overrides):
    return build_topology(load_topology(REPO_TOPOLOGIES / f"{name}.yaml", nodes=nodes, overrides=overrides))


def _time(plan, topo):
    env = simpy.Environment()
    net = FlowNetwork(env, topo.capacity_Bps, topo.latency_s, topo.message_overhead_s)

    def run():
        for st in plan.stages:
            yield net.transfer(st.size_bytes, st.offsets, st.links)

    env.process(run())
    env.run()
    return env.now


def _uniform_alltoall_busbw(topo, per_pair_bytes=64e6, algorithm="direct"):
    """nccl-tests all-to-all busbw: algbw x (n-1)/n, algbw = bytes per rank (n x per pair) / time."""
    g = topo.num_gpus
    b = np.full((g, g), per_pair_bytes)
    m = TrafficMatrix("dispatch", b, np.ones((g, g), dtype=np.int64))
    t = _time(plan_collective(algorithm, m, topo), topo)
    return per_pair_bytes * g / t * (g - 1) / g


def _report(name, predicted, measured):
    err = predicted / measured - 1.0
    print(f"[calibration] {name}: predicted {predicted / 1e9:.1f} GB/s, published {measured / 1e9:.1f} GB/s, "
          f"error {err:+.1%}")
    return err


def test_one_gpu_per_node_busbw_is_one_nic():
    # one GPU per node: busbw = NIC bandwidth; CX-7 NDR 46-49 GB/s effective (midpoint 47.5)
    topo = _topo("dgx-h100", 8, node={"gpus": 1})
    err = _report("1 GPU/node x 8 nodes, 400G NIC", _uniform_alltoall_busbw(topo), 47.5e9)
    assert abs(err) <= TARGET


@pytest.mark.parametrize("nodes", [2, 4, 8])
def test_nvlink_nodes_busbw_is_n_over_n_minus_1_nic(nodes):
    topo = _topo("dgx-h100", nodes)
    rule = nodes / (nodes - 1) * 47.5e9
    err = _report(f"DGX H100 x {nodes} nodes, N/(N-1) x NIC", _uniform_alltoall_busbw(topo), rule)
    assert abs(err) <= TARGET


def test_single_nic_not_aggregated():
    # giving a GPU 2 NICs' worth of ports would not help NCCL all-to-all; our model has one NIC per GPU,
    # so per-GPU scale-out = one NIC: the busbw of 2 nodes never exceeds 2 x one NIC.
    topo = _topo("dgx-h100", 2)
    assert _uniform_alltoall_busbw(topo) <= 2 * 50e9


@pytest.mark.parametrize("name,published", [("dgx-h100", 370e9), ("dgx-a100", 230e9)])
def test_single_node_nvlink_alltoall_busbw(name, published):
    err = _report(f"{name} one node NVLink", _uniform_alltoall_busbw(_topo(name, 1)), published)
    assert abs(err) <= TARGET


# -- DeepEP (normal kernels) -------------------------------------------------------------------------

HIDDEN, EXPERTS, TOP_K, TOKENS = 7168, 256, 8, 4096
FP8_ROW = HIDDEN * (1 + 4 / 128)  # bytes = BF16 bytes x (1 + 4/128) / 2
BF16_ROW = HIDDEN * 2.0


def _deepep_routing(num_ranks, gpus_per_node, seed=0):
    """Uniform random scores; node-limited top-8: best min(nodes, 4) nodes by their max score, then top-8
    experts inside them. Returns (token [A], dst rank [A]) per kept (token, expert), src rank per token."""
    rng = np.random.default_rng(seed)
    n_tok = num_ranks * TOKENS
    scores = rng.random((n_tok, EXPERTS), dtype=np.float32)  # [N, E]
    nodes = num_ranks // gpus_per_node
    per_node = EXPERTS // nodes
    limit = min(nodes, 4)
    node_best = scores.reshape(n_tok, nodes, per_node).max(axis=2)  # [N, nodes]
    allowed_nodes = np.argsort(-node_best, axis=1)[:, :limit]  # [N, limit]
    mask = np.zeros((n_tok, nodes), dtype=bool)
    np.put_along_axis(mask, allowed_nodes, True, axis=1)
    masked = np.where(np.repeat(mask, per_node, axis=1), scores, -1.0)  # [N, E]
    experts = np.argpartition(-masked, TOP_K, axis=1)[:, :TOP_K]  # [N, k]
    token = np.repeat(np.arange(n_tok), TOP_K)
    dst = experts.reshape(-1) // (EXPERTS // num_ranks)  # contiguous placement
    return token, dst, np.repeat(np.arange(num_ranks), TOKENS)


def _deepep_case(nodes):
    topo = _topo("h800-multiplane", nodes)
    g = topo.num_gpus
    token, dst, src_of_token = _deepep_routing(g, 8)
    pair = np.unique(token * g + dst)  # distinct (token, rank)
    tok, rank = pair // g, pair % g
    src = src_of_token[tok]
    rows = np.bincount(src * g + rank, minlength=g * g).reshape(g, g)
    disp = Dispatch(TrafficMatrix("dispatch", rows * FP8_ROW, rows), FP8_ROW, tok, src, rank)
    comb = disp.transposed("combine", BF16_ROW / FP8_ROW)
    t_disp = _time(plan_collective("deepep", disp, topo), topo)
    t_comb = _time(plan_collective("deepep", comb, topo), topo)
    recv_rows = rows.sum(axis=0).mean()  # tokens received per rank (own rank included)
    node = topo.gpu_node_index
    rdma_pairs = len(np.unique(tok * nodes + node[rank])) / g  # (token, dst node) incl. own node, per rank
    return t_disp, t_comb, recv_rows, rdma_pairs


# Known misses (docs/network.md, "Calibration"): the model is optimistic on DeepEP because its kernels
# are SM-driven copies. EP8: the rank's own share goes through the same buffer and warps as the
# remote ones (the model makes local rows free: 8/7 x 160 GB/s); EP16: NVLink forwarding is
# store-and-forward per chunk on the few SMs left after the RDMA senders/receivers. We assert the
# physics the model does capture (bottleneck, byte ratios) and bound the error, not tune it away.
MISS_BOUND = 0.30


def test_deepep_ep8_intranode_nvlink():
    t_d, t_c, recv, _ = _deepep_case(1)
    e1 = _report("DeepEP EP8 dispatch (NVLink, FP8)", recv * FP8_ROW / t_d, 153e9)
    e2 = _report("DeepEP EP8 combine (NVLink, BF16)", recv * BF16_ROW / t_c, 158e9)
    assert 0 < e1 <= MISS_BOUND and abs(e2) <= TARGET
    # counting the own-rank share at the NVLink rate (as DeepEP's copy kernel does) meets the target
    e3 = _report("DeepEP EP8 dispatch, local rows at NVLink rate", recv * FP8_ROW / (t_d * 8 / 7), 153e9)
    assert abs(e3) <= TARGET


def test_deepep_ep16_internode_rdma_logical():
    t_d, t_c, recv, rdma = _deepep_case(2)
    e1 = _report("DeepEP EP16 dispatch (RDMA logical, FP8)", rdma * FP8_ROW / t_d, 43e9)
    e2 = _report("DeepEP EP16 combine (RDMA logical, BF16)", rdma * BF16_ROW / t_c, 43e9)
    assert 0 < e1 <= MISS_BOUND and 0 < e2 <= MISS_BOUND
    ratio = recv / rdma  # NVLink bytes received per rank / RDMA logical bytes
    err = ratio / 3.27 - 1
    print(f"[calibration] DeepEP EP16 NVLink/RDMA byte ratio: predicted {ratio:.2f}, published 3.27, error {err:+.1%}")
    assert abs(err) <= TARGET
    # NVLink-bound: the physical IB rate per NIC is well below the NIC's 47.5 GB/s
    physical = (rdma - TOKENS) * FP8_ROW / t_d  # (token, other node) pairs only
    _report("DeepEP EP16 physical IB per NIC", physical, 21.5e9)
    assert physical < 0.75 * 47.5e9
