"""Behaviour of each router kind: what the papers say it does, checked on small hand-built batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from etr_sim.activations.batch import TokenBatch
from etr_sim.activations.synthetic import generate
from etr_sim.config.scenario import ModelSpec, RouterSpec, SyntheticActivations
from etr_sim.routing.metrics import add_feature_stats
from etr_sim.errors import ConfigError
from etr_sim.routing import ExpertLocality, make_router
from etr_sim.routing import functional as F
from etr_sim.routing.capacity import resonance_threshold
from etr_sim.routing.theory import locmoe_min_capacity


def build(d: dict, model: ModelSpec, ep: int, hidden: int, seed: int = 0, locality=None):
    return make_router(TypeAdapter(RouterSpec).validate_python(d), model, ep, hidden, seed, locality)


def synthetic(d=64, gpus=8, per_gpu=64, seed=0, strength=0.5, gpus_per_node=4):
    act = SyntheticActivations(kind="synthetic", hidden_size=d, num_clusters=8, cluster_strength=strength)
    return generate(act, per_gpu, np.arange(gpus) // gpus_per_node, seed)


def theorem_batch(rho: float, d=256, experts=8, gpus=4, per_gpu=512, frac=0.25, seed=0) -> TokenBatch:
    """ETR Theorem 5's data: a fraction ``frac`` of tokens carry signal sqrt(rho) along a GrAP gate,
    the rest are isotropic."""
    g = torch.Generator().manual_seed(seed)
    n = gpus * per_gpu
    x = torch.randn(n, d, generator=g) / math.sqrt(d)
    u = F.grap_weight(d, experts).T
    u = u / u.norm(dim=1, keepdim=True)  # [E, d] unit gate directions
    disc = torch.rand(n, generator=g) < frac
    cls = torch.randint(0, experts, (n,), generator=g)
    x[disc] = math.sqrt(rho) * u[cls[disc]] + math.sqrt(1 - rho) * x[disc]
    gpu = np.repeat(np.arange(gpus), per_gpu)
    return TokenBatch(x, gpu, gpu // 2, np.tile(np.arange(per_gpu), gpus))


def test_grap_affinity_matches_explicit_gate():
    x = torch.randn(50, 32, dtype=torch.float64).float()
    w = F.grap_weight(32, 4)  # [d, E]
    cos = (x @ w) / (x.norm(dim=1, keepdim=True) * w.norm(dim=0, keepdim=True))
    torch.testing.assert_close(F.grap_affinity(x, 4), cos, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(F.grap_logits(x, 4), x @ w, rtol=1e-5, atol=1e-6)
    xb = x.to(torch.bfloat16)  # bf16 path: same ranking up to bf16 rounding
    assert (F.grap_affinity(xb, 4) - F.grap_affinity(xb.float(), 4)).abs().max() < 0.02


def test_etr_with_unbounded_capacity_is_top_l_token_choice_on_grap():
    b = synthetic()
    model = ModelSpec(num_experts=8, top_k=2)
    etr = build({"kind": "etr", "nominations": 2, "capacity": {"rule": "fixed", "tokens": b.num_tokens}}, model, 8, 64).route(b)
    tcr = build({"kind": "token_choice", "gate": "grap", "capacity_factor": None}, model, 8, 64).route(b)
    assert etr.num_dropped == 0
    assert set(zip(etr.token.tolist(), etr.expert.tolist())) == set(zip(tcr.token.tolist(), tcr.expert.tolist()))


def test_etr_expert_keeps_its_best_nominators():
    b = synthetic(seed=2)
    model = ModelSpec(num_experts=8, top_k=1)
    dec = build({"kind": "etr", "nominations": 1, "capacity": {"rule": "fixed", "tokens": 3}}, model, 8, 64).route(b)
    aff = F.grap_affinity(b.hidden, 8).numpy()
    for g in range(8):
        for e in range(8):
            kept = dec.token[(dec.expert == e) & (dec.group[dec.token] == g)]
            lost = dec.dropped_token[(dec.dropped_expert == e) & (dec.group[dec.dropped_token] == g)]
            if len(lost):
                assert len(kept) == 3
                assert aff[kept, e].min() >= aff[lost, e].max()


def test_threshold_nominations_follow_affinity_mass():
    aff = torch.tensor([[0.5, 0.3, 0.1, 0.1], [0.9, 0.05, 0.05, 0.0], [0.25, 0.25, 0.25, 0.25]])
    _, top_e, valid = F.threshold_nominations(aff, 0.75, 4)
    assert valid.sum(1).tolist() == [2, 1, 3]  # 0.5+0.3 >= .75; 0.9; .25*3 = .75
    _, _, capped = F.threshold_nominations(aff, 0.99, 2)
    assert capped.sum(1).tolist() == [2, 2, 2]


def test_dynamic_capacity_moves_from_token_choice_to_expert_choice():
    """Isotropic features: the expert-side cut never binds (TCR). Gate-aligned features: it binds and
    C falls to about the resonant count (ECR), ETR Corollary 6."""
    model = ModelSpec(num_experts=8, top_k=1)
    spec = {"kind": "etr", "nominations": 1, "capacity": {"rule": "dynamic"}}
    early_batch, late_batch = theorem_batch(0.0), theorem_batch(0.2)
    early = build(spec, model, 4, 256).route(early_batch)
    late = build(spec, model, 4, 256).route(late_batch)
    add_feature_stats(early, early_batch)
    add_feature_stats(late, late_batch)
    assert early.stats["expert_cut_binds"] == 0.0 and early.num_dropped == 0
    assert early.capacity == early.group_expert_load().max()  # C = the largest nominator count
    assert late.stats["expert_cut_binds"] == 1.0
    assert late.capacity < 0.6 * early.capacity
    resonant_per_expert = 512 * 0.25 / 8  # tokens per GPU * signal fraction / experts
    assert resonant_per_expert <= late.capacity <= 2.5 * resonant_per_expert
    assert late.stats["calinski_harabasz"] > early.stats["calinski_harabasz"]


def test_resonance_threshold_is_the_null_quantile():
    tau = resonance_threshold(256, 8, 0.01)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200_000 // 8, 256, generator=gen)
    best = F.grap_affinity(x, 8).max(dim=1).values
    assert abs(float((best > tau).double().mean()) - 0.01) < 0.004


def test_locmoe_first_batch_capacity_is_fixed_per_layer_and_resettable():
    model = ModelSpec(num_experts=8, top_k=1)
    r = build({"kind": "locmoe", "capacity": {"rule": "locmoe_first_batch", "delta": 0.2}}, model, 8, 64)
    first = r.route(synthetic(seed=0))
    assert first.capacity == math.ceil(float(locmoe_min_capacity(0.2, 64, 8)))
    floored = build({"kind": "locmoe", "capacity": {"rule": "locmoe_first_batch", "delta": 0.2, "floor_factor": 1.0}},
                    model, 8, 64).route(synthetic(seed=0))
    assert floored.capacity == 64 // 8  # conventional C = 64 tokens per GPU * 1 / 8 experts > the bound
    measured = build({"kind": "locmoe"}, model, 8, 64)
    c0 = measured.route(synthetic(seed=0, strength=0.0)).capacity
    b_other = synthetic(seed=1, strength=0.95)
    assert measured.route(b_other).capacity == c0  # fixed after the first batch of layer 0
    layer1 = TokenBatch(b_other.hidden, b_other.src_gpu, b_other.src_node, b_other.position, layer=1)
    assert measured.route(layer1).stats["capacity_delta"] != measured.state.fixed[0].delta  # layer 1 has its own
    assert set(measured.state.fixed) == {0, 1}
    measured.reset()
    assert measured.state.fixed == {}


def test_locality_preferences_raise_the_local_share():
    b = synthetic(gpus=8, gpus_per_node=4)
    model = ModelSpec(num_experts=8, top_k=1)
    plain = build({"kind": "locmoe", "locality_mu": 0.0, "capacity": {"rule": "fixed", "tokens": 10**6}}, model, 8, 64).route(b)
    local = build({"kind": "locmoe", "locality_mu": 0.3, "capacity": {"rule": "fixed", "tokens": 10**6}}, model, 8, 64).route(b)
    assert local.stats["locality_share"] > plain.stats["locality_share"] + 0.1
    # the tilt is argmax(logit + mu * local): check it token by token
    logits = F.grap_logits(b.hidden, 8).numpy()
    is_local = ExpertLocality.contiguous_from_batch(8, 8, b.src_gpu, b.src_node).is_local(b.src_gpu, b.src_node)
    np.testing.assert_array_equal(local.expert, np.argmax(logits + 0.3 * is_local, axis=1))
    etr0 = build({"kind": "etr", "nominations": 1, "capacity": {"rule": "fixed", "tokens": 10**6}}, model, 8, 64).route(b)
    etr1 = build({"kind": "etr", "nominations": 1, "locality_bias": 1.0, "capacity": {"rule": "fixed", "tokens": 10**6}},
                 model, 8, 64).route(b)
    assert etr1.stats["locality_share"] > etr0.stats["locality_share"] + 0.1


def test_node_limited_reaches_at_most_m_nodes():
    b = synthetic(gpus=8, gpus_per_node=2)  # 4 nodes, 2 experts per node
    model = ModelSpec(num_experts=8, top_k=3)
    loc = ExpertLocality.contiguous_from_batch(8, 8, b.src_gpu, b.src_node)
    for m in (2, 3):
        dec = build({"kind": "node_limited", "max_nodes": m}, model, 8, 64, locality=loc).route(b)
        nodes = loc.assignment_node(b.src_gpu[dec.token], dec.expert)
        per_token = [len(set(nodes[dec.token == t])) for t in range(b.num_tokens)]
        assert max(per_token) <= m
        assert dec.stats["nodes_per_token_max"] <= m
    # M >= nodes: plain top-k (same label, so the same seeded gate)
    free = build({"kind": "node_limited", "name": "g", "max_nodes": 4}, model, 8, 64, locality=loc).route(b)
    tcr = build({"kind": "token_choice", "name": "g", "top_k": 3, "capacity_factor": None}, model, 8, 64).route(b)
    np.testing.assert_array_equal(free.expert, tcr.expert)
    with pytest.raises(ConfigError, match="max_nodes"):
        build({"kind": "node_limited", "max_nodes": 1}, model, 8, 64, locality=loc).route(b)  # 2 experts < k=3


def test_balanced_is_perfectly_even_and_hash_follows_token_ids():
    b = synthetic()
    model = ModelSpec(num_experts=8, top_k=2)
    bal = build({"kind": "balanced"}, model, 8, 64).route(b)
    assert (bal.group_expert_load() == 64 * 2 // 8).all()
    ids = np.tile(np.arange(16), b.num_tokens // 16)
    with_ids = TokenBatch(b.hidden, b.src_gpu, b.src_node, b.position, token_id=ids)
    h = build({"kind": "hash"}, model, 8, 64).route(with_ids)
    experts_of = {}
    for t, e in zip(h.token.tolist(), h.expert.tolist()):
        experts_of.setdefault(ids[t], set()).add(e)
    for t in range(b.num_tokens):
        assert set(h.expert[h.token == t].tolist()) == experts_of[ids[t]]
    other_seed = build({"kind": "hash"}, model, 8, 64, seed=1).route(with_ids)
    assert not np.array_equal(other_seed.expert, h.expert)


def test_random_uniform_is_uniform():
    b = synthetic(gpus=8, per_gpu=2000)
    dec = build({"kind": "random_uniform"}, ModelSpec(num_experts=8, top_k=2), 8, 64).route(b)
    load = dec.expert_load()
    expected = b.num_tokens * 2 / 8
    assert np.abs(load - expected).max() < 5 * math.sqrt(expected)  # ~5 sigma
    per_token = np.bincount(dec.token, minlength=b.num_tokens)
    assert (per_token == 2).all()


def test_token_choice_arrival_keeps_first_choices_in_sequence_order():
    b = synthetic(seed=4)
    model = ModelSpec(num_experts=8, top_k=1)
    dec = build({"kind": "token_choice", "drop_policy": "arrival", "capacity_factor": 0.5}, model, 8, 64).route(b)
    for g in range(8):
        for e in range(8):
            kept = dec.token[(dec.expert == e) & (dec.group[dec.token] == g)]
            lost = dec.dropped_token[(dec.dropped_expert == e) & (dec.group[dec.dropped_token] == g)]
            if len(lost):
                assert kept.max() < lost.min()
    assert dec.stats["aux_loss"] >= 1.0 - 1e-9  # Switch loss is >= 1 (= 1 when perfectly balanced)


def test_combine_weights():
    b = synthetic()
    model = ModelSpec(num_experts=8, top_k=2)
    for mode in ("softmax", "uniform"):
        dec = build({"kind": "etr", "combine_weights": mode}, model, 8, 64).route(b)
        sums = np.bincount(dec.token, weights=dec.weight, minlength=b.num_tokens)
        reached = np.bincount(dec.token, minlength=b.num_tokens) > 0
        np.testing.assert_allclose(sums[reached], 1.0, rtol=1e-5)
    tcr = build({"kind": "token_choice", "capacity_factor": None}, model, 8, 64).route(b)
    np.testing.assert_allclose(np.bincount(tcr.token, weights=tcr.weight), 1.0, rtol=1e-5)


def test_gate_loaded_from_file_matches_the_weight(tmp_path):
    from safetensors.torch import save_file

    b = synthetic(seed=6)
    model = ModelSpec(num_experts=8, top_k=2)
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))  # [E, d], nn.Linear layout
    save_file({"router_weight.layer0": w, "router_weight.layer1": w.flip(0)}, str(tmp_path / "r.safetensors"))
    torch.save({"gate": w.T.contiguous()}, tmp_path / "r.pt")  # [d, E]
    expected = (b.hidden @ w.T).topk(2, dim=-1).indices.reshape(-1).numpy()
    (tmp_path / "capture").mkdir()
    save_file({"router_weight.layer0": w}, str(tmp_path / "capture" / "router.safetensors"))
    for gate in ({"file": str(tmp_path / "r.safetensors")}, {"file": str(tmp_path / "r.pt"), "tensor": "gate"},
                 {"file": str(tmp_path / "capture")}):
        dec = build({"kind": "token_choice", "gate": gate, "capacity_factor": None}, model, 8, 64).route(b)
        np.testing.assert_array_equal(dec.expert, expected)
    layer1 = TokenBatch(b.hidden, b.src_gpu, b.src_node, b.position, layer=1)
    dec1 = build({"kind": "expert_choice", "gate": {"file": str(tmp_path / "r.safetensors")}}, model, 8, 64).route(layer1)
    scores = torch.softmax(b.hidden @ w.flip(0).T, dim=-1)
    assert int(scores[:64, 0].argmax()) in dec1.token[(dec1.expert == 0) & (dec1.token < 64)].tolist()


def test_gate_file_problems_name_the_file_and_tensor(tmp_path):
    from safetensors.torch import save_file

    b = synthetic()
    model = ModelSpec(num_experts=8, top_k=2)
    save_file({"router_weight.layer0": torch.zeros(7, 64)}, str(tmp_path / "bad.safetensors"))
    cases = [
        ({"file": str(tmp_path / "missing.safetensors")}, "not found"),
        ({"file": str(tmp_path / "bad.safetensors"), "tensor": "nope"}, "nope: no such tensor"),
        ({"file": str(tmp_path / "bad.safetensors")}, r"router_weight.layer0: expected shape .* \(got \[7, 64\]\)"),
    ]
    for gate, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            build({"kind": "token_choice", "gate": gate}, model, 8, 64).route(b)
        assert gate["file"] in str(err.value)
