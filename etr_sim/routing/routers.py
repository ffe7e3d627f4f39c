"""Routers: token batch -> RoutingDecision. One class per YAML ``kind``; maths in functional.py."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch

from etr_sim.activations.batch import TokenBatch
from etr_sim.config.scenario import ExpertChoiceRouter, EtrRouter, ModelSpec, TokenChoiceRouter
from etr_sim.routing import functional as F
from etr_sim.routing.decision import RoutingDecision
from etr_sim.seeding import seed_for


class Router(ABC):
    """A routing policy with its parameters. ``route`` is pure given (parameters, batch)."""

    kind: ClassVar[str]

    def __init__(self, spec, model: ModelSpec, ep: int, hidden_size: int, seed: int):
        self.spec = spec
        self.model = model
        self.ep = ep
        self.hidden_size = hidden_size
        self.num_experts = model.num_experts
        self.seed = seed

    @abstractmethod
    def route(self, batch: TokenBatch) -> RoutingDecision: ...

    # -- shared helpers ------------------------------------------------------------------------
    def groups(self, batch: TokenBatch) -> np.ndarray:
        """[N] capacity group of each token: its source GPU, or its EP group for scope 'global'."""
        if self.spec.capacity_scope == "gpu":
            return batch.src_gpu.astype(np.int64)
        return (batch.src_gpu // self.ep).astype(np.int64)

    def gate_scores(self, hidden: torch.Tensor, gate: str) -> torch.Tensor:
        """[N, E] router logits from a seeded random gate or the fixed GrAP gate."""
        if gate == "grap":
            weight = F.grap_weight(self.hidden_size, self.num_experts)
        else:
            weight = F.random_gate(self.hidden_size, self.num_experts, seed_for(self.seed, "gate", self.spec.label))
        return hidden.float() @ weight  # [N, E]

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
        dec = RoutingDecision(
            num_tokens=batch.num_tokens,
            num_experts=self.num_experts,
            token=token[keep],
            expert=expert[keep],
            weight=weight[keep].astype(np.float32),
            dropped_token=token[~keep],
            dropped_expert=expert[~keep],
            group=group,
            capacity=capacity,
            padded=padded and capacity is not None,
            stats={},
        )
        load = dec.expert_load()
        reached = np.zeros(batch.num_tokens, dtype=bool)
        reached[dec.token] = True
        dec.stats.update(
            dropped_fraction=dec.num_dropped / max(dec.num_nominated, 1),
            tokens_unrouted_fraction=float(1.0 - reached.mean()) if batch.num_tokens else 0.0,
            load_max_over_mean=float(load.max() / load.mean()) if load.sum() else 0.0,
            padding_fraction=dec.padding_slots() / max(dec.padding_slots() + dec.num_kept, 1),
            **stats,
        )
        return dec


def _tokens_per_group(group: np.ndarray) -> int:
    return int(np.bincount(group).max()) if len(group) else 0


class TokenChoice(Router):
    """Top-k of softmax(gate), capacity per (group, expert), drop by arrival order or probability."""

    kind = "token_choice"
    spec: TokenChoiceRouter

    def route(self, batch: TokenBatch) -> RoutingDecision:
        s, n_exp = self.spec, self.num_experts
        k = s.top_k or self.model.top_k
        probs = torch.softmax(self.gate_scores(batch.hidden, s.gate), dim=-1)  # [N, E]
        top_p, top_e = probs.topk(k, dim=-1)  # [N, k]
        weight = top_p / top_p.sum(-1, keepdim=True) if s.normalize_weights else top_p  # [N, k]
        n = batch.num_tokens
        token = np.repeat(np.arange(n, dtype=np.int64), k)  # [N*k] token-major
        expert = top_e.reshape(-1).numpy().astype(np.int64)
        group = self.groups(batch)
        capacity = None
        keep = np.ones(n * k, dtype=bool)
        if s.capacity_factor is not None:
            capacity = F.capacity_from_factor(s.capacity_factor, _tokens_per_group(group), k, n_exp)
            if s.drop_policy == "probs":
                priority = top_p.reshape(-1).double().numpy()
            else:  # GShard: every token's 1st choice before any 2nd choice, then sequence order
                slot = np.tile(np.arange(k), n)
                priority = -(slot * n + token).astype(np.float64)
            keep = F.keep_best_per_bucket(group[token] * n_exp + expert, priority, capacity)
        return self.decide(
            batch, group, token, expert, weight.reshape(-1).numpy(), keep, capacity, s.padded,
            aux_loss=F.switch_aux_loss(probs, top_e[:, 0]),
        )


class ExpertChoice(Router):
    """Each expert takes its top-C tokens of the group by softmax score (Zhou et al. 2022)."""

    kind = "expert_choice"
    spec: ExpertChoiceRouter

    def route(self, batch: TokenBatch) -> RoutingDecision:
        s, n_exp = self.spec, self.num_experts
        k = s.top_k or self.model.top_k
        scores = torch.softmax(self.gate_scores(batch.hidden, s.gate), dim=-1)  # [N, E]
        group = self.groups(batch)
        capacity = F.capacity_from_factor(s.capacity_factor, _tokens_per_group(group), k, n_exp)
        tokens, experts, weights = [], [], []
        for g in np.unique(group):
            members = np.flatnonzero(group == g)  # [N_g]
            c = min(capacity, len(members))
            top_s, top_t = scores[torch.from_numpy(members)].T.topk(c, dim=-1)  # [E, c]
            tokens.append(members[top_t.numpy()].reshape(-1))
            experts.append(np.repeat(np.arange(n_exp, dtype=np.int64), c))
            weights.append(top_s.reshape(-1).numpy())
        token, expert, weight = (np.concatenate(x) for x in (tokens, experts, weights))
        order = np.lexsort((expert, token))  # token-major like the other routers
        token, expert, weight = token[order], expert[order], weight[order]
        return self.decide(batch, group, token, expert, weight, np.ones(len(token), bool), capacity, False)


class Etr(Router):
    """Expert-Token Resonance: top-l nominations on GrAP affinity, each expert keeps its best C nominators."""

    kind = "etr"
    spec: EtrRouter

    def capacity(self, tokens_per_group: int, nominations: int) -> int:
        rule = self.spec.capacity
        if rule.rule == "fixed":
            return rule.tokens
        return F.capacity_from_factor(rule.factor, tokens_per_group, nominations, self.num_experts)

    def route(self, batch: TokenBatch) -> RoutingDecision:
        s, n_exp = self.spec, self.num_experts
        l_nom = s.nominations or self.model.top_k
        affinity = F.grap_affinity(batch.hidden, n_exp)  # [N, E]
        top_a, top_e = affinity.topk(l_nom, dim=-1)  # [N, l]
        n = batch.num_tokens
        token = np.repeat(np.arange(n, dtype=np.int64), l_nom)
        expert = top_e.reshape(-1).numpy().astype(np.int64)
        score = top_a.reshape(-1).double().numpy()
        group = self.groups(batch)
        capacity = self.capacity(_tokens_per_group(group), l_nom)
        keep = F.keep_best_per_bucket(group[token] * n_exp + expert, score, capacity)
        weight = self.combine_weights(token, score, keep, n)
        return self.decide(batch, group, token, expert, weight, keep, capacity, s.padded,
                           mean_affinity=float(score.mean()) if len(score) else 0.0)

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
