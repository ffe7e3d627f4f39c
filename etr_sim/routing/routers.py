"""Routers: token batch -> RoutingDecision. One class per YAML ``kind``; maths in functional.py.

Open choices the papers leave (all configurable, defaults documented in docs/routing.md):
- ETR combine weights: softmax over the kept experts' cosine affinities (default), the raw cosine,
  or uniform 1/kept.
- ETR nominations by threshold: the fewest top experts whose share of the token's positive affinity
  mass reaches the threshold (the paper's "threshold on the sum of affinity scores").
- ETR locality bias: ``locality_bias`` is added to the z-score (cosine * sqrt(d), ~N(0, 1) for
  isotropic tokens) of experts on the token's node when ranking nominations; the expert side still
  ranks nominators by their true affinity.
- LocMoE locality: the KL locality loss mu * KL(D_c || D_l) becomes a routing-time tilt. Staying
  close to the gate distribution p while rewarding locality, the minimiser of
  KL(q || p) - mu * E_q[local] is q_i ~ p_i * exp(mu * local_i), so a token takes
  argmax_i (logit_i + mu * local_i): a local expert wins unless a remote one is e^mu times more
  probable. Combine weight = the untilted gate probability of the chosen expert. Over capacity,
  LocMoE keeps the highest-probability tokens.
- DeepSeek-V3 node-limited routing scores a node by its best expert (issue text) or by the sum of its
  two best experts (the DeepSeek-V3 report); softmax scores (V3 uses sigmoid + bias; not modelled).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch

from etr_sim.activations.batch import TokenBatch
from etr_sim.errors import ConfigError, problem
from etr_sim.config.scenario import (
    BalancedRouter,
    DynamicCapacity,
    EtrRouter,
    ExpertChoiceRouter,
    FactorCapacity,
    FixedCapacity,
    HashRouter,
    LocMoEFirstBatchCapacity,
    LocMoERouter,
    ModelSpec,
    NodeLimitedRouter,
    RandomUniformRouter,
    TokenChoiceRouter,
)
from etr_sim.routing import functional as F
from etr_sim.routing import metrics as M
from etr_sim.routing.capacity import CapacityState, FixedForLayer, dynamic_capacity, locmoe_capacity, measured_delta
from etr_sim.routing.decision import RoutingDecision
from etr_sim.routing.gates import load_gate
from etr_sim.routing.locality import ExpertLocality
from etr_sim.seeding import seed_for


class Router(ABC):
    """A routing policy with its parameters and explicit state.

    ``route`` is a pure function of (parameters, state, batch). The only state is ``self.state``
    (capacities fixed on a layer's first batch); ``reset()`` clears it.
    """

    kind: ClassVar[str]

    def __init__(
        self,
        spec,
        model: ModelSpec,
        ep: int,
        hidden_size: int,
        seed: int,
        locality: ExpertLocality | None = None,
    ):
        self.spec = spec
        self.model = model
        self.ep = ep
        self.hidden_size = hidden_size
        self.num_experts = model.num_experts
        self.seed = seed
        self.locality = locality
        self.state = CapacityState()
        self._gates: dict[int, torch.Tensor] = {}

    @abstractmethod
    def route(self, batch: TokenBatch) -> RoutingDecision: ...

    def reset(self) -> None:
        """Forget capacities fixed on first batches (a new training run)."""
        self.state.reset()

    # -- shared helpers ------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return self.spec.label

    def groups(self, batch: TokenBatch) -> np.ndarray:
        """[N] capacity group of each token: its source GPU, or its EP group for scope 'global'."""
        if self.spec.capacity_scope == "gpu":
            return batch.src_gpu.astype(np.int64)
        return (batch.src_gpu // self.ep).astype(np.int64)

    def locality_for(self, batch: TokenBatch) -> ExpertLocality:
        if self.locality is not None:
            return self.locality
        return ExpertLocality.contiguous_from_batch(self.num_experts, self.ep, batch.src_gpu, batch.src_node)

    def gate_logits(self, batch: TokenBatch, gate) -> torch.Tensor:
        """[U, E] router logits of each distinct input (``batch.hidden``; ``batch.expand`` gives [N, E])
        from a seeded random gate, the fixed GrAP gate, or a loaded weight."""
        if gate == "grap":
            return F.grap_logits(batch.hidden, self.num_experts)
        weight = self._gates.get(batch.layer)
        if weight is None:
            if gate == "random":
                weight = F.random_gate(self.hidden_size, self.num_experts, seed_for(self.seed, "gate", self.label, batch.layer))
            else:
                weight = load_gate(gate.file, gate.tensor, batch.layer, self.hidden_size, self.num_experts)
            self._gates[batch.layer] = weight
        return F.linear_logits(batch.hidden, weight)

    def decide(
        self,
        batch: TokenBatch,
        group: np.ndarray,
        token: np.ndarray,
        expert: np.ndarray,
        weight: np.ndarray,
        keep: np.ndarray,
        capacity: int | None,
        padded: bool,
        **stats: float,
    ) -> RoutingDecision:
        """Assemble a decision from candidate (token, expert) pairs and the keep mask, with statistics."""
        kept, dropped = np.flatnonzero(keep), np.flatnonzero(~keep)
        dec = RoutingDecision(
            num_tokens=batch.num_tokens,
            num_experts=self.num_experts,
            token=token[kept],
            expert=expert[kept],
            weight=weight[kept].astype(np.float32),
            dropped_token=token[dropped],
            dropped_expert=expert[dropped],
            group=group,
            capacity=capacity,
            padded=padded and capacity is not None,
            stats={},
        )
        reached = np.zeros(batch.num_tokens, dtype=bool)
        reached[dec.token] = True
        expert_node = self.locality_for(batch).assignment_node(batch.src_gpu[dec.token], dec.expert)  # [A]
        pad = dec.padding_slots()
        dec.stats.update(
            dropped_fraction=dec.num_dropped / max(dec.num_nominated, 1),
            tokens_unrouted_fraction=float(1.0 - reached.mean()) if batch.num_tokens else 0.0,
            padding_fraction=pad / max(pad + dec.num_kept, 1),
            locality_share=M.locality_share(expert_node == batch.src_node[dec.token]),
            **M.load_stats(dec.expert_load()),
            **stats,
        )
        return dec

    def capacity_from_rule(
        self,
        rule,
        batch: TokenBatch,
        affinity,
        bucket: np.ndarray,
        score: np.ndarray,
        num_buckets: int,
        tokens_per_group: int,
        nominations: int,
    ) -> tuple[int, dict[str, float]]:
        """Apply an ETR/LocMoE capacity rule. Returns (C, statistics describing how C was set).

        Args: the rule spec; ``affinity``: a function returning the [N, E] cosine affinity (called
        only when needed); every nomination's bucket (group * E + expert) and cosine ``score`` [A];
        ``nominations``: l in the factor rule (the maximum l when nominations vary per token, so the
        capacity does not depend on how a batch is chunked).
        """
        if isinstance(rule, FixedCapacity):
            return rule.tokens, {}
        if isinstance(rule, FactorCapacity):
            return F.capacity_from_factor(rule.factor, tokens_per_group, nominations, self.num_experts), {}
        if isinstance(rule, LocMoEFirstBatchCapacity):
            fixed = self.state.fixed.get(batch.layer)
            if fixed is None:
                delta = rule.delta if rule.delta is not None else measured_delta(affinity(), rule.delta_quantile)
                cap = locmoe_capacity(delta, batch.hidden_size, self.num_experts, rule.scale)
                if rule.floor_factor is not None:
                    cap = max(cap, F.capacity_from_factor(rule.floor_factor, tokens_per_group, nominations, self.num_experts))
                fixed = self.state.fixed[batch.layer] = FixedForLayer(cap, delta, batch.step)
            return fixed.capacity, {"capacity_delta": fixed.delta, "capacity_fixed_at_step": float(fixed.step)}
        if isinstance(rule, DynamicCapacity):
            return dynamic_capacity(
                bucket, score, num_buckets, tokens_per_group, batch.hidden_size, self.num_experts, rule
            )
        raise AssertionError(f"unknown capacity rule {rule!r}")

    def calibrate(self, batch: TokenBatch) -> None:
        """Fix the state of stateful capacity rules on ``batch`` (as if it were the layer's first batch).

        Lets a caller that routes a large batch in chunks fix "the first batch" to the whole batch.
        """
        self.state.fixed.pop(batch.layer, None)
        self.route(batch)


def _tokens_per_group(group: np.ndarray) -> int:
    return int(np.bincount(group).max()) if len(group) else 0


def _topk_decision(
    router: Router,
    batch: TokenBatch,
    top_p: torch.Tensor,
    top_e: torch.Tensor,
    capacity_factor: float | None,
    padded: bool,
    drop_policy: str,
    normalize: bool,
    **stats: float,
) -> RoutingDecision:
    """Token choice with an optional capacity: top-k [N, k] picks -> decision (shared by softmax routers)."""
    n, k = top_e.shape
    n_exp = router.num_experts
    weight = top_p / top_p.sum(-1, keepdim=True).clamp_min(1e-30) if normalize else top_p  # [N, k]
    token = np.repeat(np.arange(n, dtype=np.int64), k)  # [N*k] token-major
    expert = top_e.reshape(-1).numpy().astype(np.int64)
    group = router.groups(batch)
    capacity = None
    keep = np.ones(n * k, dtype=bool)
    if capacity_factor is not None:
        capacity = F.capacity_from_factor(capacity_factor, _tokens_per_group(group), k, n_exp)
        if drop_policy == "probs":
            priority = top_p.reshape(-1).double().numpy()
        else:  # GShard: every token's 1st choice before any 2nd choice, then sequence order
            slot = np.tile(np.arange(k), n)
            priority = -(slot * n + token).astype(np.float64)
        keep = F.keep_best_per_bucket(group[token] * n_exp + expert, priority, capacity)
    return router.decide(batch, group, token, expert, weight.reshape(-1).numpy(), keep, capacity, padded, **stats)


class TokenChoice(Router):
    """Top-k of softmax(gate), capacity per (group, expert), drop by arrival order or probability."""

    kind = "token_choice"
    spec: TokenChoiceRouter

    def route(self, batch: TokenBatch) -> RoutingDecision:
        s = self.spec
        k = s.top_k or self.model.top_k
        logits = self.gate_logits(batch, s.gate)  # [U, E] per distinct input
        if batch.rows is None:  # one input per token (one pass of the compiled kernel on large batches)
            top_p, top_e, mean_prob = F.softmax_top_k(logits, k, compiled=F.uses_kernel(batch.hidden))
        else:  # inputs shared by tokens: top-k per distinct input; the mean weighs inputs by their tokens
            probs = torch.softmax(logits, dim=-1)
            top_p, top_e = (batch.expand(t) for t in F.topk(probs, k))  # [N, k]
            mean_prob = batch.expand(probs).mean(0)
        aux = F.switch_aux_loss(mean_prob, top_e[:, 0]) if batch.num_tokens else 0.0
        return _topk_decision(
            self, batch, top_p, top_e, s.capacity_factor, s.padded, s.drop_policy, s.normalize_weights, aux_loss=aux
        )


class ExpertChoice(Router):
    """Each expert takes its top-C tokens of the group by softmax score (Zhou et al. 2022)."""

    kind = "expert_choice"
    spec: ExpertChoiceRouter

    def route(self, batch: TokenBatch) -> RoutingDecision:
        s, n_exp = self.spec, self.num_experts
        k = s.top_k or self.model.top_k
        scores = batch.expand(torch.softmax(self.gate_logits(batch, s.gate), dim=-1))  # [N, E]
        group = self.groups(batch)
        capacity = F.capacity_from_factor(s.capacity_factor, _tokens_per_group(group), k, n_exp)
        token, expert, weight = F.group_topk(scores, group, capacity)
        per_token = np.bincount(token, minlength=batch.num_tokens)
        return self.decide(
            batch, group, token, expert, weight, np.ones(len(token), bool), capacity, False,
            experts_per_token_max=float(per_token.max()) if len(per_token) else 0.0,
        )


class Etr(Router):
    """Expert-Token Resonance: top-l nominations on GrAP affinity, each expert keeps its best C nominators."""

    kind = "etr"
    spec: EtrRouter

    def route(self, batch: TokenBatch) -> RoutingDecision:
        s, n_exp, n = self.spec, self.num_experts, batch.num_tokens
        l_max = s.nominations or self.model.top_k
        if s.nomination_threshold is not None:
            l_max = s.nominations or n_exp
        bonus = s.locality_bias / math.sqrt(batch.hidden_size)  # z-units -> cosine
        table = self.locality_for(batch).bonus_table(bonus) if bonus > 0 else None  # [G, E]
        if s.nomination_threshold is None and (table is None or batch.rows is None):
            # top-l per input row, in the same pass as the affinity on large batches
            rows = F.grap_top(batch.hidden, n_exp, l_max, cosine=True, bonus=table, bonus_row=batch.src_gpu)
            affinity, top_e = rows.values, rows.top
            top_e, top_a = (batch.expand(t) for t in (top_e, affinity.gather(1, top_e)))
            valid = None  # every token nominates exactly l
        elif table is not None:  # the bonus depends on the token's GPU, the inputs are shared: per token
            affinity = F.grap_affinity(batch.hidden, n_exp)  # [U, E] cosine of each distinct input
            token_affinity = batch.expand(affinity)  # [N, E]
            local = self.locality_for(batch).local_bonus(batch.src_gpu, bonus)  # [N, E]
            top_e, valid = self.nominate(local.add_(token_affinity), l_max)  # bonus + affinity, in place
            top_a = token_affinity.gather(1, top_e)  # [N, L] true affinity of each nomination
        else:  # threshold nominations, once per distinct input
            affinity = F.grap_affinity(batch.hidden, n_exp)
            top_e, valid = self.nominate(affinity, l_max)
            top_e, valid, top_a = (batch.expand(t) for t in (top_e, valid, affinity.gather(1, top_e)))
        token = np.repeat(np.arange(n, dtype=np.int64), top_e.shape[1])  # token-major
        expert = top_e.reshape(-1).numpy().astype(np.int64)
        score = top_a.reshape(-1).numpy().astype(np.float64)
        if valid is not None:
            flat_valid = valid.reshape(-1).numpy()
            token, expert, score = token[flat_valid], expert[flat_valid], score[flat_valid]
        group = self.groups(batch)
        num_buckets = (int(group.max()) + 1) * n_exp if n else 0
        bucket = group[token] * n_exp + expert
        capacity, cap_stats = self.capacity_from_rule(
            s.capacity, batch, lambda: batch.expand(affinity), bucket, score, num_buckets, _tokens_per_group(group), l_max
        )
        keep = F.keep_best_per_bucket(bucket, score, capacity)
        nominators = np.bincount(bucket, minlength=num_buckets)
        weight = self.combine_weights(token, score, keep, n)
        return self.decide(
            batch, group, token, expert, weight, keep, capacity, s.padded,
            mean_affinity=float(score.mean()) if len(score) else 0.0,
            mean_nominations=len(token) / max(n, 1),
            expert_cut_binds=float((nominators > capacity).any()) if len(nominators) else 0.0,
            **cap_stats,
        )

    def nominate(self, ranking: torch.Tensor, l_max: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(experts [R, L], valid [R, L] bool) each row nominates: top-l, or by the cumulative threshold."""
        if self.spec.nomination_threshold is not None:
            _, top_e, valid = F.threshold_nominations(ranking, self.spec.nomination_threshold, l_max)
            return top_e, valid
        top_e = F.topk(ranking, l_max)[1]
        return top_e, torch.ones_like(top_e, dtype=torch.bool)

    def combine_weights(self, token: np.ndarray, score: np.ndarray, keep: np.ndarray, n: int) -> np.ndarray:
        """[A] combine weights over each token's KEPT experts (the paper leaves this open)."""
        mode = self.spec.combine_weights
        if mode == "affinity":
            return score
        kept_count = np.bincount(token[keep], minlength=n).astype(np.float64)  # [N]
        if mode == "uniform":
            return 1.0 / np.maximum(kept_count[token], 1.0)
        e = np.where(keep, np.exp(score - 1.0), 0.0)  # affinity <= 1: shift for stability
        total = np.bincount(token, weights=e, minlength=n)  # [N]
        return e / np.where(total[token] > 0, total[token], 1.0)


class LocMoE(Router):
    """LocMoE: GrAP top-1 tilted towards experts on the token's node; capacity from the first-batch bound."""

    kind = "locmoe"
    spec: LocMoERouter

    def route(self, batch: TokenBatch) -> RoutingDecision:
        s, n_exp, n = self.spec, self.num_experts, batch.num_tokens
        scale = n_exp / batch.hidden_size  # block sum -> <x, w_i>, LocMoE's gate output
        table = self.locality_for(batch).bonus_table(s.locality_mu) if s.locality_mu > 0 else None  # [G, E]
        if batch.rows is None:  # one input per token: choice and softmax statistics in one pass
            rows = F.grap_top(
                batch.hidden, n_exp, 1, rank_scale=scale, bonus=table, bonus_row=batch.src_gpu, softmax=True
            )
            block, norm, choice = rows.values, rows.norms, rows.top[:, 0]  # choice: argmax(logit + mu * local)
            prob, mean_prob = rows.top1_prob, rows.mean_prob  # untilted probability of the choice; [E]
        else:  # inputs shared by tokens: statistics per distinct input, the tilt per token
            block, norm = (batch.expand(t) for t in F.grap_stats(batch.hidden, n_exp))  # [N, E], [N, 1]
            logits = block * scale  # [N, E]
            probs = torch.softmax(logits, dim=-1)
            if table is not None:  # mu on experts local to the token's node, added in place
                logits = self.locality_for(batch).local_bonus(batch.src_gpu, s.locality_mu).add_(logits)
            choice = logits.argmax(dim=-1)  # [N] argmax_i (logit_i + mu * local_i)
            prob, mean_prob = probs.gather(1, choice[:, None])[:, 0], probs.mean(0)
        token = np.arange(n, dtype=np.int64)
        expert = choice.numpy().astype(np.int64)
        prob = prob.double().numpy()  # [N]
        group = self.groups(batch)

        def affinity() -> torch.Tensor:  # cosine, only needed while a capacity is being set
            return block / (math.sqrt(batch.hidden_size / n_exp) * norm.clamp_min(1e-12))

        bucket = group[token] * n_exp + expert
        num_buckets = (int(group.max()) + 1) * n_exp if n else 0
        score = np.zeros(0)
        if isinstance(s.capacity, DynamicCapacity):
            score = affinity().gather(1, choice[:, None])[:, 0].double().numpy()  # [N] cosine of the choice
        capacity, cap_stats = self.capacity_from_rule(
            s.capacity, batch, affinity, bucket, score, num_buckets, _tokens_per_group(group), 1
        )
        keep = F.keep_best_per_bucket(bucket, prob, capacity)
        aux = F.switch_aux_loss(mean_prob, choice) if n else 0.0
        return self.decide(batch, group, token, expert, prob, keep, capacity, s.padded, aux_loss=aux, **cap_stats)


class _Fixed(Router):
    """Routers whose experts do not depend on the features: k experts per token from ``experts(batch)``."""

    def route(self, batch: TokenBatch) -> RoutingDecision:
        top_e = self.experts(batch)  # [N, k]
        n, k = top_e.shape
        token = np.repeat(np.arange(n, dtype=np.int64), k)
        weight = np.full(n * k, 1.0 / k)
        return self.decide(batch, self.groups(batch), token, top_e.reshape(-1), weight, np.ones(n * k, bool), None, False)

    @abstractmethod
    def experts(self, batch: TokenBatch) -> np.ndarray: ...

    @property
    def k(self) -> int:
        return self.spec.top_k or self.model.top_k


class Hash(_Fixed):
    """Hash layers: the experts of a token are a seeded hash of its id (or position); no capacity."""

    kind = "hash"
    spec: HashRouter

    def experts(self, batch: TokenBatch) -> np.ndarray:
        use_id = self.spec.key == "token_id" and batch.token_id is not None
        key = np.asarray(batch.token_id if use_id else batch.position, dtype=np.int64).astype(np.uint64)
        return F.hashed_topk(F.hash_keys(key), self.num_experts, self.k, seed_for(self.seed, "hash", self.label))


class RandomUniform(_Fixed):
    """k distinct experts uniformly at random, seeded per (GPU, position, layer, step) of the token."""

    kind = "random_uniform"
    spec: RandomUniformRouter

    def experts(self, batch: TokenBatch) -> np.ndarray:
        key = F.hash_keys(batch.src_gpu.astype(np.uint64), batch.position.astype(np.uint64), batch.layer, batch.step)
        return F.hashed_topk(key, self.num_experts, self.k, seed_for(self.seed, "random_uniform", self.label))


class Balanced(_Fixed):
    """Perfectly balanced: the i-th token of each group goes to experts (i*k + j) mod E, j < k."""

    kind = "balanced"
    spec: BalancedRouter

    def experts(self, batch: TokenBatch) -> np.ndarray:
        group = self.groups(batch)
        order = np.argsort(group, kind="stable")
        sizes = np.bincount(group) if len(group) else np.zeros(0, dtype=np.int64)
        slot = np.empty(len(group), dtype=np.int64)
        slot[order] = np.arange(len(group)) - np.repeat(np.r_[0, np.cumsum(sizes)[:-1]], sizes)
        return (slot[:, None] * self.k + np.arange(self.k)[None, :]) % self.num_experts  # [N, k]


class NodeLimited(Router):
    """DeepSeek-V3 node-limited routing: top-M nodes by node score, then top-k experts inside them."""

    kind = "node_limited"
    spec: NodeLimitedRouter

    def route(self, batch: TokenBatch) -> RoutingDecision:
        s = self.spec
        k = s.top_k or self.model.top_k
        probs = batch.expand(torch.softmax(self.gate_logits(batch, s.gate), dim=-1))  # [N, E]
        loc = self.locality_for(batch)
        node_table = loc.gpu_node[loc.expert_gpu]  # [G, E] node of each expert per source GPU
        compact = torch.from_numpy(node_table - node_table.min(axis=1, keepdims=True))  # node index in the EP group
        if bool((compact == compact[0]).all()):  # every source GPU sees the same layout (the usual case)
            node_idx = compact[0]  # [E]
        else:
            node_idx = compact.index_select(0, torch.from_numpy(batch.src_gpu.astype(np.int64)))  # [N, E]
        mask = F.node_limited_mask(probs, node_idx, s.max_nodes, s.node_score)
        top_p, top_e = F.topk(probs.masked_fill(~mask, -1.0), k)  # [N, k] (-1 < any probability)
        if batch.num_tokens and bool((top_p < 0).any()):
            raise ConfigError(
                "scenario",
                problem(f"routers ({self.label}).max_nodes", f"{s.max_nodes} node(s) host fewer than top_k={k} experts", s.max_nodes),
            )
        picked = np.sort((node_idx[top_e] if node_idx.dim() == 1 else node_idx.gather(1, top_e)).numpy(), axis=1)  # [N, k]
        nodes_per_token = 1 + (np.diff(picked, axis=1) != 0).sum(1)  # [N]
        return _topk_decision(
            self, batch, top_p, top_e, s.capacity_factor, s.padded, "probs", s.normalize_weights,
            nodes_per_token_max=float(nodes_per_token.max()) if len(nodes_per_token) else 0.0,
        )
