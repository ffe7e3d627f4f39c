"""Quality metrics and the functional helpers, against hand computations and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from etr_sim.routing import functional as F
from etr_sim.routing import metrics as M


def test_gini_and_load_stats_by_hand():
    assert M.gini(np.array([1, 1, 1, 1])) == 0.0
    assert M.gini(np.array([0, 0, 0, 4])) == pytest.approx(0.75)  # (n-1)/n for one holder
    s = M.load_stats(np.array([2.0, 2.0, 2.0, 6.0]))
    assert s["load_max_over_mean"] == pytest.approx(2.0)
    assert s["load_cv"] == pytest.approx(np.std([2, 2, 2, 6]) / 3.0)
    p = np.array([2, 2, 2, 6]) / 12
    assert s["load_entropy"] == pytest.approx(-(p * np.log(p)).sum() / np.log(4))
    assert M.load_stats(np.array([5, 5, 5]))["load_entropy"] == pytest.approx(1.0)


def test_calinski_harabasz_by_definition():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, 300)
    x = rng.normal(size=(4, 6))[lab] * 2 + rng.normal(size=(300, 6))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    centers = np.stack([xn[lab == k].mean(0) for k in range(4)])
    between = sum((lab == k).sum() * np.sum((centers[k] - xn.mean(0)) ** 2) for k in range(4))
    within = sum(np.sum((xn[lab == k] - centers[k]) ** 2) for k in range(4))
    expected = (between / 3) / (within / (300 - 4))
    got = M.calinski_harabasz(torch.tensor(x, dtype=torch.float32), np.arange(300), lab)
    assert got == pytest.approx(expected, rel=1e-4)
    assert np.isnan(M.calinski_harabasz(torch.ones(3, 2), np.arange(3), np.zeros(3, dtype=np.int64)))


@settings(max_examples=60, deadline=None)
@given(
    bucket=st.lists(st.integers(0, 5), min_size=0, max_size=60),
    cap=st.integers(1, 6),
    seed=st.integers(0, 1000),
    spread=st.sampled_from([1, 1 << 28]),  # narrow buckets: one unique-key sort; wide: the radix sort
)
def test_keep_best_per_bucket_matches_brute_force(bucket, cap, seed, spread):
    bucket = np.array(bucket, dtype=np.int64) * spread
    rng = np.random.default_rng(seed)
    values = np.array([-1.5, -0.0, 0.0, 0.25, 3.0, -np.inf, 1e-40])  # signs, both zeros, a float32 subnormal
    for priority in (rng.integers(0, 4, len(bucket)).astype(np.float64),  # many ties
                     rng.choice(values, len(bucket)),
                     rng.integers(0, 4, len(bucket)) + 1e-12 * rng.random(len(bucket))):  # not float32: fallback
        keep = F.keep_best_per_bucket(bucket, priority, cap)
        for b in np.unique(bucket):
            idx = np.flatnonzero(bucket == b)
            order = sorted(idx, key=lambda i: (-priority[i], i))  # priority desc, then lower index
            assert set(np.flatnonzero(keep & (bucket == b))) == set(order[:cap])


@pytest.mark.parametrize("ties", [False, True])
def test_group_topk_equal_and_ragged_groups(ties):
    """Each expert takes the best C of every group; ties at the cut go to the lower token index
    (captured data repeats tokens, so exact ties are common)."""
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (30, 4), generator=gen).float() if ties else torch.rand(30, 4, generator=gen)
    for group in (np.repeat(np.arange(3), 10), np.r_[np.zeros(12), np.ones(5), np.full(13, 2)].astype(np.int64),
                  np.tile(np.arange(3), 10)):
        token, expert, score = F.group_topk(scores, group, 6)
        for g in np.unique(group):
            members = np.flatnonzero(group == g)
            for e in range(4):
                want = members[np.argsort(-scores[members, e].numpy(), kind="stable")[: min(6, len(members))]]
                got = token[(expert == e) & np.isin(token, members)]
                assert sorted(got) == sorted(want)
        np.testing.assert_array_equal(score, scores.numpy()[token, expert])
        assert (np.diff(token) >= 0).all()  # token-major
        assert all((np.diff(expert[token == t]) > 0).all() for t in np.unique(token))  # experts ascending


def test_hashed_topk_distinct_and_deterministic():
    key = F.hash_keys(np.arange(1000, dtype=np.uint64))
    a = F.hashed_topk(key, 16, 4, seed=1)
    assert a.shape == (1000, 4)
    assert all(len(set(row)) == 4 for row in a.tolist())
    np.testing.assert_array_equal(a, F.hashed_topk(key, 16, 4, seed=1))
    assert not np.array_equal(a, F.hashed_topk(key, 16, 4, seed=2))


def test_node_limited_mask_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.45, 0.0, 0.3]])
    node = torch.tensor([[0, 0, 1, 1, 2, 2]])
    assert F.node_limited_mask(scores, node, 1, "max").tolist() == [[True, True, False, False, False, False]]
    # top2_sum: node0 = 1.0, node1 = 0.95, node2 = 0.3
    assert F.node_limited_mask(scores, node, 2, "top2_sum")[0].tolist() == [True, True, True, True, False, False]
    scores2 = torch.tensor([[0.9, 0.0, 0.5, 0.45, 0.0, 0.3]])
    assert F.node_limited_mask(scores2, node, 1, "top2_sum")[0].tolist() == [False, False, True, True, False, False]


@pytest.mark.parametrize("node_score", ["max", "top2_sum"])
def test_node_limited_mask_shared_layout_matches_per_token(node_score):
    """[E] node indices (contiguous equal groups: the reshaped fast path, or any other layout) give
    the mask of the same indices repeated per token; ties included."""
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (200, 12), generator=gen).float()  # many ties
    for node in (torch.arange(12) // 3, torch.tensor([2, 0, 1, 3] * 3)):
        per_token = F.node_limited_mask(scores, node.expand(200, 12).clone(), 2, node_score)
        assert torch.equal(F.node_limited_mask(scores, node, 2, node_score), per_token)


@pytest.mark.parametrize("k", [1, 2, 4, 5, 8, 39, 40])
def test_topk_breaks_ties_to_the_lower_expert(k):
    """Every k (row maxima up to 4, torch.topk plus a stable re-sort of tied rows above) gives the
    order of a stable descending sort: equal scores keep the lower expert first."""
    gen = torch.Generator().manual_seed(k)
    scores = torch.cat([torch.randint(0, 5, (300, 40), generator=gen).float(), torch.rand(300, 40, generator=gen)])
    scores[:20] = 0.0  # every expert ties
    values, indices = F.topk(scores, k)
    want_values, want_indices = scores.sort(dim=-1, descending=True, stable=True)
    assert torch.equal(indices, want_indices[:, :k])
    assert torch.equal(values, want_values[:, :k])
