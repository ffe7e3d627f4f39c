"""Invariants every router must keep, parametrised over every router kind and capacity rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from etr_sim.activations.batch import TokenBatch
from etr_sim.config.scenario import ModelSpec, RouterSpec, SyntheticActivations
from etr_sim.activations.synthetic import generate
from etr_sim.routing import ROUTERS, ExpertLocality, make_router

D, E, EP, GPUS, TOKENS_PER_GPU = 64, 8, 8, 8, 96
MODEL = ModelSpec(hidden_size=D, num_experts=E, top_k=2)

SPECS = {
    "token_choice": {"kind": "token_choice", "capacity_factor": 1.0},
    "token_choice_arrival": {"kind": "token_choice", "gate": "grap", "drop_policy": "arrival", "capacity_factor": 0.8},
    "token_choice_dropless": {"kind": "token_choice", "capacity_factor": None, "padded": False},
    "token_choice_global": {"kind": "token_choice", "capacity_scope": "global", "capacity_factor": 1.0},
    "expert_choice": {"kind": "expert_choice"},
    "expert_choice_big": {"kind": "expert_choice", "capacity_factor": 20.0},
    "etr": {"kind": "etr"},
    "etr_fixed": {"kind": "etr", "nominations": 3, "capacity": {"rule": "fixed", "tokens": 20}},
    "etr_threshold": {"kind": "etr", "nominations": 4, "nomination_threshold": 0.6, "combine_weights": "uniform"},
    "etr_locmoe_bound": {"kind": "etr", "capacity": {"rule": "locmoe_first_batch"}, "locality_bias": 1.0},
    "etr_dynamic": {"kind": "etr", "capacity": {"rule": "dynamic"}, "padded": True},
    "locmoe": {"kind": "locmoe"},
    "locmoe_fixed_delta": {"kind": "locmoe", "capacity": {"rule": "locmoe_first_batch", "delta": 0.2}},
    "hash": {"kind": "hash"},
    "random_uniform": {"kind": "random_uniform"},
    "balanced": {"kind": "balanced"},
    "node_limited": {"kind": "node_limited", "max_nodes": 1},
    "node_limited_cap": {"kind": "node_limited", "max_nodes": 1, "node_score": "top2_sum", "capacity_factor": 1.0},
}
# Routers whose capacity depends on the whole call (recomputed per call) cannot be chunked freely.
PER_CALL = {"etr_dynamic"}


def spec(name: str):
    return TypeAdapter(RouterSpec).validate_python(SPECS[name])


def batch(seed: int = 0, strength: float = 0.5) -> TokenBatch:
    act = SyntheticActivations(kind="synthetic", hidden_size=D, num_clusters=12, cluster_strength=strength)
    return generate(act, TOKENS_PER_GPU, np.repeat(np.arange(GPUS // 4), 4), seed)


def router(name: str, seed: int = 0):
    return make_router(spec(name), MODEL, EP, D, seed)


def pairs(token, expert):
    return set(zip(token.tolist(), expert.tolist()))


def test_every_kind_is_covered():
    assert {SPECS[n]["kind"] for n in SPECS} == set(ROUTERS)


@pytest.fixture(scope="module")
def decisions():
    b = batch()
    return b, {name: router(name).route(b) for name in SPECS}


@pytest.mark.parametrize("name", list(SPECS))
def test_assignments_unique_and_conserved(decisions, name):
    b, dec = decisions[0], decisions[1][name]
    kept, dropped = pairs(dec.token, dec.expert), pairs(dec.dropped_token, dec.dropped_expert)
    assert len(kept) == dec.num_kept and len(dropped) == dec.num_dropped  # unique
    assert not kept & dropped  # kept + dropped = nominated, disjoint
    assert dec.num_kept + dec.num_dropped == dec.num_nominated
    assert ((dec.token >= 0) & (dec.token < b.num_tokens)).all()
    assert ((dec.expert >= 0) & (dec.expert < E)).all()
    assert np.isfinite(dec.weight).all()
    assert all(np.isfinite(v) or np.isnan(v) for v in dec.stats.values())
    assert 0.0 <= dec.stats["dropped_fraction"] <= 1.0
    assert 0.0 <= dec.stats["locality_share"] <= 1.0


@pytest.mark.parametrize("name", list(SPECS))
def test_nominations_per_token(decisions, name):
    """Token-choice style routers nominate exactly k experts per token (before any drop)."""
    b, dec = decisions[0], decisions[1][name]
    nominated = np.bincount(np.r_[dec.token, dec.dropped_token], minlength=b.num_tokens)
    kind, s = SPECS[name]["kind"], SPECS[name]
    if kind in ("token_choice", "hash", "random_uniform", "balanced", "node_limited"):
        assert (nominated == MODEL.top_k).all()
    elif kind == "locmoe":
        assert (nominated == 1).all()
    elif kind == "etr" and "nomination_threshold" not in s:
        assert (nominated == s.get("nominations", MODEL.top_k)).all()
    elif kind == "etr":
        assert nominated.min() >= 1 and nominated.max() <= s["nominations"]


@pytest.mark.parametrize("name", list(SPECS))
def test_load_within_capacity(decisions, name):
    dec = decisions[1][name]
    if dec.capacity is None:
        return
    assert dec.group_expert_load().max() <= dec.capacity
    if dec.padded:
        assert dec.padding_slots() == int((dec.capacity - dec.group_expert_load()).sum())
        assert (dec.expert_padding() >= 0).all()


@pytest.mark.parametrize("name", ["expert_choice", "expert_choice_big"])
def test_expert_choice_fills_every_expert(decisions, name):
    dec = decisions[1][name]
    per_group = np.bincount(dec.group)
    expected = np.minimum(dec.capacity, per_group)[:, None]  # [groups, 1]
    assert (dec.group_expert_load() == expected).all()
    assert dec.num_dropped == 0


@pytest.mark.parametrize("name", list(SPECS))
def test_same_seed_same_decision(name):
    b = batch(seed=3)
    one, two = router(name, seed=7).route(b), router(name, seed=7).route(b)
    for field in ("token", "expert", "weight", "dropped_token", "dropped_expert"):
        np.testing.assert_array_equal(getattr(one, field), getattr(two, field))
    assert one.capacity == two.capacity


@pytest.mark.parametrize("name", [n for n in SPECS if n not in PER_CALL])
def test_chunked_routing_equals_one_pass(name):
    """Routing whole capacity groups chunk by chunk gives the decision of one pass (stateful rules are
    calibrated on the whole batch first, so 'the first batch' is the same)."""
    b = batch(seed=5)
    whole_router, chunk_router = router(name), router(name)
    locality = ExpertLocality.contiguous_from_batch(E, EP, b.src_gpu, b.src_node)
    whole_router.locality = chunk_router.locality = locality
    whole_router.calibrate(b)
    chunk_router.calibrate(b)
    whole = whole_router.route(b)
    gpus_per_chunk = 2 if SPECS[name].get("capacity_scope") != "global" else GPUS
    tokens, experts, weights, dropped = [], [], [], []
    for start in range(0, GPUS, gpus_per_chunk):
        sel = np.flatnonzero((b.src_gpu >= start) & (b.src_gpu < start + gpus_per_chunk))
        part = TokenBatch(b.hidden[torch.from_numpy(sel)], b.src_gpu[sel], b.src_node[sel], b.position[sel], b.layer, b.step)
        dec = chunk_router.route(part)
        tokens.append(sel[dec.token])
        experts.append(dec.expert)
        weights.append(dec.weight)
        dropped.append(pairs(sel[dec.dropped_token], dec.dropped_expert))
        assert dec.capacity == whole.capacity
    np.testing.assert_array_equal(np.concatenate(tokens), whole.token)
    np.testing.assert_array_equal(np.concatenate(experts), whole.expert)
    np.testing.assert_allclose(np.concatenate(weights), whole.weight, rtol=1e-6)
    assert set().union(*dropped) == pairs(whole.dropped_token, whole.dropped_expert)


@pytest.mark.parametrize("name", list(SPECS))
def test_bf16_input_runs(name):
    b = batch(seed=1)
    half = TokenBatch(b.hidden.to(torch.bfloat16), b.src_gpu, b.src_node, b.position)
    dec = router(name).route(half)
    assert dec.num_nominated > 0


@pytest.mark.parametrize("name", list(SPECS))
def test_shared_inputs_route_like_materialised_ones(name):
    """A batch whose tokens share distinct inputs (captured data: ``rows``) routes exactly like the
    same batch with every token's input copied out."""
    b = batch(seed=2)
    distinct = b.hidden[: len(b.hidden) // 3]
    rows = np.random.default_rng(0).integers(0, len(distinct), b.num_tokens)
    shared = TokenBatch(distinct, b.src_gpu, b.src_node, b.position, rows=rows)
    copied = TokenBatch(shared.inputs(), b.src_gpu, b.src_node, b.position)
    assert shared.inputs().shape == (b.num_tokens, D)
    a, c = router(name).route(shared), router(name).route(copied)
    np.testing.assert_array_equal(a.token, c.token)
    np.testing.assert_array_equal(a.expert, c.expert)
    np.testing.assert_allclose(a.weight, c.weight, rtol=1e-6)
    assert pairs(a.dropped_token, a.dropped_expert) == pairs(c.dropped_token, c.dropped_expert)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_grap_kernel_matches_torch(dtype, monkeypatch):
    """Large batches take the one-pass numba kernel; it agrees with the torch path to float32
    rounding and gives the same routing decisions."""
    from etr_sim.routing import functional as F
    from etr_sim.routing import kernels

    b = batch(seed=3)
    x = b.hidden.to(dtype)
    monkeypatch.setattr(F, "FUSED_MIN_ELEMENTS", 1 << 62)  # torch everywhere
    ref_block, ref_norm = F.grap_stats(x, E)
    got_block, got_norm, _, _, _ = kernels.grap_rows(x, E)
    torch.testing.assert_close(got_block, ref_block, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_norm, ref_norm, rtol=1e-6, atol=0)
    cos, _, top, _, _ = kernels.grap_rows(x, E, cosine=True, top=3)
    torch.testing.assert_close(cos, F.grap_affinity(x, E), rtol=1e-5, atol=1e-6)
    assert torch.equal(top, F.topk(cos, 3)[1])  # the kernel's top-k ranks the values it returns
    table = torch.rand(GPUS, E, generator=torch.Generator().manual_seed(1))  # a tilt per source GPU
    block, _, tilted, top1_prob, mean_prob = kernels.grap_rows(
        x, E, top=2, rank_scale=E / D, bonus=table, bonus_row=b.src_gpu, softmax=True)
    assert torch.equal(tilted, F.topk(table[torch.from_numpy(b.src_gpu)] + block * (E / D), 2)[1])
    probs = torch.softmax(block * (E / D), dim=-1)  # the untilted softmax: the kernel's own exp agrees to ~1e-7
    torch.testing.assert_close(top1_prob, probs.gather(1, tilted[:, :1])[:, 0], rtol=1e-6, atol=0)
    torch.testing.assert_close(mean_prob, probs.double().mean(0), rtol=1e-6, atol=0)
    routed = TokenBatch(x, b.src_gpu, b.src_node, b.position)
    grap = [n for n in SPECS if SPECS[n]["kind"] in ("etr", "locmoe", "token_choice")]  # kernel users
    slow = {n: router(n).route(routed) for n in grap}
    monkeypatch.setattr(F, "FUSED_MIN_ELEMENTS", 0)  # the kernel everywhere
    for name, want in slow.items():
        got = router(name).route(routed)
        np.testing.assert_array_equal(got.token, want.token)
        np.testing.assert_array_equal(got.expert, want.expert)
        np.testing.assert_array_equal(got.dropped_expert, want.dropped_expert)
        np.testing.assert_allclose(got.weight, want.weight, rtol=1e-5)


def test_compiled_grap_kernel_vector_path_matches_torch(monkeypatch):
    """bf16 rows with E and d/(2E) multiples of 16 take the kernel's hand-vectorised path (the tests
    above, d = 64 and E = 8, take the plain loops): 2 groups of 16 blocks, 3 vectors per block."""
    from etr_sim.routing import functional as F
    from etr_sim.routing import kernels

    n, d, e = 200, 3072, 32
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(6)).to(torch.bfloat16)
    monkeypatch.setattr(F, "FUSED_MIN_ELEMENTS", 1 << 62)  # torch everywhere
    ref_block, ref_norm = F.grap_stats(x, e)
    block, norm, _, _, _ = kernels.grap_rows(x, e)
    torch.testing.assert_close(block, ref_block, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm, ref_norm, rtol=1e-6, atol=0)
    cos, _, top, _, _ = kernels.grap_rows(x, e, cosine=True, top=3)
    torch.testing.assert_close(cos, F.grap_affinity(x, e), rtol=1e-5, atol=1e-6)
    assert torch.equal(top, F.topk(cos, 3)[1])


def test_compiled_grap_kernel_is_independent_of_threads():
    """Rows are split into fixed tasks, so the kernel's output is bitwise the same at any thread count."""
    from etr_sim.routing import kernels

    x = batch(seed=4).hidden.to(torch.bfloat16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernels.grap_rows(x, E, top=2, softmax=True)
        torch.set_num_threads(2)
        two = kernels.grap_rows(x, E, top=2, softmax=True)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_compiled_grap_kernel_top_k_breaks_ties_to_the_lower_expert():
    """Integer-valued inputs make block sums tie often; the kernel's top-k must order them as
    successive row maxima do (lower expert first), with and without a tilt, and treat -0.0 as 0.0."""
    from etr_sim.routing import functional as F
    from etr_sim.routing import kernels

    gen = torch.Generator().manual_seed(5)
    x = torch.randint(-1, 2, (300, D), generator=gen).to(torch.bfloat16)
    x[:7] = 0.0  # all-zero rows: every block sum ties at 0
    x[7:14] = -0.0
    block, _, top, _, _ = kernels.grap_rows(x, E, top=4)
    assert torch.equal(top, F.topk(block, 4)[1])
    table = torch.randint(0, 2, (3, E), generator=gen).float()
    rows = np.arange(300) % 3
    tilted = kernels.grap_rows(x, E, top=3, rank_scale=0.5, bonus=table, bonus_row=rows)[2]
    assert torch.equal(tilted, F.topk(table[torch.from_numpy(rows)] + block * 0.5, 3)[1])


def test_compiled_softmax_top_k_matches_torch():
    """Token choice on large batches takes softmax and top-k in one compiled pass: the same experts
    as torch's softmax + topk (ties, from repeated logits, to the lower expert) and probabilities
    within ~1e-7."""
    from etr_sim.routing import functional as F
    from etr_sim.routing import kernels

    gen = torch.Generator().manual_seed(6)
    logits = torch.cat([torch.randn(500, 24, generator=gen) * 4, torch.randint(0, 3, (200, 24), generator=gen).float()])
    logits[-1] = 0.0  # every expert ties
    for k in (1, 2, 5):
        top_p, top_e, mean_prob = kernels.softmax_top_k(logits, k)
        probs = torch.softmax(logits, dim=-1)
        want_p, want_e = F.topk(probs, k)
        assert torch.equal(top_e, want_e)
        torch.testing.assert_close(top_p, want_p, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(mean_prob, probs.double().mean(0), rtol=1e-6, atol=0)
