"""Capture from tiny randomly initialised transformers MoE models (built locally, nothing downloaded)."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from etr_sim.activations.capture import capture, capture_model_dir, find_hook_points  # noqa: E402
from etr_sim.activations.store import load_capture  # noqa: E402
from etr_sim.errors import ConfigError  # noqa: E402

V, D, E, K = 97, 32, 8, 2
COMMON = dict(vocab_size=V, hidden_size=D, num_attention_heads=4, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def tiny_config(family: str):
    T = transformers
    if family == "mixtral":
        return T.MixtralConfig(**COMMON, intermediate_size=48, num_hidden_layers=2, num_key_value_heads=2,
                               num_local_experts=E, num_experts_per_tok=K)
    if family == "qwen2_moe":
        return T.Qwen2MoeConfig(**COMMON, intermediate_size=48, moe_intermediate_size=16, shared_expert_intermediate_size=16,
                                num_hidden_layers=2, num_key_value_heads=2, num_experts=E, num_experts_per_tok=K)
    if family == "qwen3_moe":
        return T.Qwen3MoeConfig(**COMMON, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
                                num_key_value_heads=2, num_experts=E, num_experts_per_tok=K, head_dim=8)
    if family == "olmoe":
        return T.OlmoeConfig(**COMMON, intermediate_size=16, num_hidden_layers=2, num_key_value_heads=2,
                             num_experts=E, num_experts_per_tok=K)
    if family == "deepseek_v3":
        return T.DeepseekV3Config(**COMMON, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
                                  first_k_dense_replace=1, num_key_value_heads=4, n_routed_experts=E,
                                  num_experts_per_tok=K, n_group=2, topk_group=1, kv_lora_rank=16, q_lora_rank=None,
                                  qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, n_shared_experts=1)
    raise ValueError(family)


SOFTMAX_TOPK = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]  # routers that pick top-k of softmax(x W^T)
FAMILIES = SOFTMAX_TOPK + ["deepseek_v3"]


def tiny_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(family))
    return model.eval()


def sequences(n: int = 5, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 12, (n,), generator=g)
    return [torch.randint(3, V, (int(t),), generator=g).tolist() for t in lengths]


@pytest.fixture(scope="module", params=FAMILIES)
def captured(request, tmp_path_factory):
    """(family, model, sequences, capture) with the model's own routing recorded independently."""
    family = request.param
    model = tiny_model(family)
    seqs = sequences()
    out = tmp_path_factory.mktemp(family) / "cap"
    capture(model, seqs, out, batch_size=2, progress=False)
    return family, model, seqs, load_capture(out)


def test_hook_points_found_by_structure(captured):
    family, model, _, cap = captured
    points = find_hook_points(model)
    moe_layers = [1, 2] if family.startswith("deepseek") else [0, 1]  # DeepSeek: first block is dense
    assert [p.layer for p in points] == moe_layers
    assert all(p.kind == "moe_router" and p.num_experts == E for p in points)
    assert cap.layers == moe_layers


def test_shapes_and_sequence_boundaries(captured):
    _, _, seqs, cap = captured
    n = sum(len(s) for s in seqs)
    assert cap.offsets.tolist() == [0] + torch.tensor([len(s) for s in seqs]).cumsum(0).tolist()
    assert cap.token_ids.tolist() == [t for s in seqs for t in s]  # padding removed, order kept
    assert cap.position.tolist() == [i for s in seqs for i in range(len(s))]
    for layer in cap.layers:
        assert tuple(cap.hidden[layer].shape) == (n, D)
        assert tuple(cap.router_logits[layer].shape) == (n, E)
        assert tuple(cap.router_weight[layer].shape) == (E, D)
    meta = json.loads((cap.folder / "capture.json").read_text())
    assert meta["hidden_size"] == D and meta["num_tokens"] == n and meta["num_sequences"] == len(seqs)


def test_captured_tensor_is_the_router_input(captured):
    """Recomputing the gate from the captured tensor gives the logits the model itself computed.

    The reference logits come from the model's own ``output_router_logits`` (not from our hook),
    run one sequence at a time without padding.
    """
    family, model, seqs, cap = captured
    own: dict[int, list[torch.Tensor]] = {x: [] for x in cap.layers}
    with torch.no_grad():
        for s in seqs:
            out = model(input_ids=torch.tensor([s]), output_router_logits=True)
            for i, layer in enumerate(cap.layers):
                own[layer].append(out.router_logits[i].float())
    for layer in cap.layers:
        recomputed = cap.hidden[layer] @ cap.router_weight[layer].T  # [N, E]
        torch.testing.assert_close(recomputed, torch.cat(own[layer]), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(cap.router_logits[layer], torch.cat(own[layer]), rtol=1e-4, atol=1e-5)


def _model_choices(model, seqs) -> dict[int, torch.Tensor]:
    """[N, k] experts the model's own router picked, recorded from the router's output."""
    picks: dict[int, list[torch.Tensor]] = {}
    handles = []
    for p in find_hook_points(model):
        def hook(module, args, output, layer=p.layer):
            picks.setdefault(layer, []).append(output[2].reshape(-1, output[2].shape[-1]))
        handles.append(p.module.register_forward_hook(hook))
    with torch.no_grad():
        for s in seqs:
            model(input_ids=torch.tensor([s]))
    for h in handles:
        h.remove()
    return {k: torch.cat(v) for k, v in picks.items()}


@pytest.mark.parametrize("family", SOFTMAX_TOPK)
def test_topk_of_captured_gate_picks_the_models_experts(family, tmp_path):
    """Direct matmul + top-k on the capture reproduces the model's expert choice (as a set per token)."""
    model, seqs = tiny_model(family), sequences()
    capture(model, seqs, tmp_path / "cap", progress=False)
    cap = load_capture(tmp_path / "cap")
    chosen = _model_choices(model, seqs)
    for layer in cap.layers:
        probs = torch.softmax(cap.hidden[layer] @ cap.router_weight[layer].T, dim=-1)  # [N, E]
        ours = probs.topk(K, dim=-1).indices.sort(-1).values
        assert torch.equal(ours, chosen[layer].sort(-1).values)


@pytest.mark.parametrize("family", ["mixtral", "olmoe"])
def test_token_choice_router_with_loaded_gate_matches_model(family, tmp_path):
    """Our token_choice router with the captured gate file picks the model's experts.

    Needs the routing package's ``gate: {file, tensor}`` option (GateFile); skipped until it is on
    main. Until then test_topk_of_captured_gate_picks_the_models_experts checks the same maths.
    """
    scenario = pytest.importorskip("etr_sim.config.scenario")
    if not hasattr(scenario, "GateFile"):
        pytest.skip("token_choice gate loading (routing issue) not merged yet")
    import numpy as np

    from etr_sim.activations.batch import TokenBatch
    from etr_sim.config.scenario import ModelSpec, TokenChoiceRouter
    from etr_sim.routing import make_router

    model, seqs = tiny_model(family), sequences()
    capture(model, seqs, tmp_path / "cap", progress=False)
    cap = load_capture(tmp_path / "cap")
    chosen = _model_choices(model, seqs)
    spec = TokenChoiceRouter(kind="token_choice", top_k=K, capacity_factor=None,
                             gate={"file": str(tmp_path / "cap" / "router.safetensors"), "tensor": "router_weight.layer{layer}"})
    msim = ModelSpec(hidden_size=D, num_experts=E, top_k=K)
    router = make_router(spec, msim, 1, D, 0)
    for layer in cap.layers:
        n = cap.hidden[layer].shape[0]
        zeros = np.zeros(n, dtype=np.int64)
        dec = router.route(TokenBatch(cap.hidden[layer], zeros, zeros, cap.position, layer=layer))
        ours = torch.as_tensor(np.sort(dec.expert.reshape(n, K), axis=1))
        assert torch.equal(ours, chosen[layer].sort(-1).values)


def test_layer_selection_and_dtype(tmp_path):
    model = tiny_model("mixtral")
    capture(model, sequences(), tmp_path / "cap", layers=[1], store_dtype="float16", progress=False)
    meta = json.loads((tmp_path / "cap" / "capture.json").read_text())
    assert [x["layer"] for x in meta["layers"]] == [1] and meta["dtype"] == "float16"
    with pytest.raises(ConfigError, match=r"--layers.*\[7\]"):
        capture(model, sequences(), tmp_path / "cap2", layers=[7], progress=False)


def test_failed_capture_leaves_nothing(tmp_path):
    model = tiny_model("mixtral")
    calls = {"n": 0}

    def flaky_forward(m, ids, mask):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("out of memory (simulated)")
        return m(input_ids=ids, attention_mask=mask)

    with pytest.raises(RuntimeError, match="simulated"):
        capture(model, sequences(6), tmp_path / "cap", batch_size=2, forward=flaky_forward, progress=False)
    assert calls["n"] == 2
    assert list(tmp_path.iterdir()) == []  # neither the capture nor its temporary folder


def test_existing_output_is_refused(tmp_path):
    model = tiny_model("mixtral")
    capture(model, sequences(), tmp_path / "cap", progress=False)
    with pytest.raises(ConfigError, match="already exists"):
        capture(model, sequences(), tmp_path / "cap", progress=False)


def _save_model_dir(tmp_path, family="mixtral"):
    """A local HF model folder: tiny random model + a word-level tokenizer built here."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"] + [f"w{i}" for i in range(V - 4)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    folder = tmp_path / "model"
    tiny_model(family).save_pretrained(folder)
    fast.save_pretrained(folder)
    text = tmp_path / "text.txt"
    text.write_text("w1 w2 w3 w4 w5\n\nw6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17\n\nw5 w4\n")
    return folder, text


def test_cli_capture_then_simulate(tmp_path, write_yaml):
    """The user path: etr-sim capture on a local MoE folder, then a scenario on that capture."""
    from etr_sim.cli import main
    from etr_sim.config import load_scenario
    from etr_sim.pipeline import run

    folder, text = _save_model_dir(tmp_path)
    out = tmp_path / "cap"
    assert main(["capture", str(folder), "--text", str(text), "--out", str(out), "--seq-len", "8"]) == 0
    cap = load_capture(out)
    assert cap.offsets.tolist() == [0, 5, 13, 17, 19]  # 5 | 8 + 4 (split at seq_len) | 2 tokens
    scenario = write_yaml(f"""
name: tiny-capture
model: {{hidden_size: 1024, ffn_hidden_size: 2048, num_experts: 8, top_k: 2}}
parallelism: {{ep: 8, seq_len: 64}}
activations: {{kind: captured, path: {out}}}
routers: [{{kind: token_choice}}, {{kind: etr}}]
topology: {{name: h100-single-leaf, nodes: 1}}
""")
    loaded = load_scenario(scenario)
    assert loaded.scenario.activations.hidden_size == D
    result = run(loaded)
    assert set(result.layers["tokens"]) == {8 * 64} and len(result.summary) == 2


def test_model_dir_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as err:
        capture_model_dir(tmp_path / "empty", tmp_path / "missing.txt", tmp_path / "out")
    msg = str(err.value)
    assert "no config.json" in msg and "--text" in msg and "2 problem(s)" in msg
    assert not (tmp_path / "out").exists()


def test_capture_is_deterministic(tmp_path):
    model, seqs = tiny_model("olmoe"), sequences()
    capture(model, seqs, tmp_path / "a", batch_size=3, progress=False)
    capture(model, seqs, tmp_path / "b", batch_size=3, progress=False)
    for name in ("shard-00000.safetensors", "shard-00001.safetensors", "router.safetensors", "capture.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_plain_torch_module_dense_ffn_and_explicit_points(tmp_path):
    """Any torch module: dense FFN inputs found by structure, or hook points given explicitly."""
    from torch import nn

    from etr_sim.activations.capture import HookPoint

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(D)
            self.mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))

        def forward(self, x):
            return x + self.mlp(self.norm(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, D)
            self.layers = nn.ModuleList(Block() for _ in range(3))

        def forward(self, ids):
            x = self.emb(ids)
            for b in self.layers:
                x = b(x)
            return x

    torch.manual_seed(0)
    net = Net()
    points = find_hook_points(net)
    assert [(p.layer, p.name, p.kind) for p in points] == [(i, f"layers.{i}.mlp", "dense_ffn") for i in range(3)]
    seqs = sequences(3)
    capture(net, seqs, tmp_path / "a", forward=lambda m, ids, mask: m(ids), progress=False)
    cap = load_capture(tmp_path / "a")
    with torch.no_grad():
        x = net.emb(torch.tensor(seqs[0]))
        x = net.layers[0](x)
        expected = net.layers[1].norm(x)  # FFN input of block 1
    torch.testing.assert_close(cap.hidden[1][: len(seqs[0])], expected)
    assert cap.router_logits == {} and cap.router_weight == {}
    explicit = [HookPoint(7, "layers.2.norm", net.layers[2].norm, "dense_ffn")]
    capture(net, seqs, tmp_path / "b", points=explicit, forward=lambda m, ids, mask: m(ids), progress=False)
    assert load_capture(tmp_path / "b").layers == [7]
