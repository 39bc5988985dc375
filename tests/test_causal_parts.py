"""The building blocks: KS distances, exact Shapley values, learned mechanisms."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from causal import ks
from causal.attribution import exact_shapley
from causal.encoding import fit_encoding
from causal.mechanisms import ContinuousMechanism, DiscreteMechanism

samples = st.lists(st.integers(-5, 5), min_size=1, max_size=40).map(
    lambda v: np.array(v, dtype=float) / 2)


def ecdf_gap(a: np.ndarray, b: np.ndarray) -> float:
    """The KS distance by its definition: the largest gap between the two ECDFs."""
    grid = np.union1d(a, b)
    fa = np.searchsorted(np.sort(a), grid, "right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, "right") / len(b)
    return float(np.max(np.abs(fa - fb)))


@settings(max_examples=60, deadline=None)
@given(samples, samples)
def test_ks_distance_matches_its_definition_with_ties(a: np.ndarray, b: np.ndarray) -> None:
    assert abs(ks.distance(a, b) - ecdf_gap(a, b)) < 1e-12


@settings(max_examples=30, deadline=None)
@given(samples, samples)
def test_weights_are_repeated_rows_and_tails_only_raise_the_distance(a: np.ndarray,
                                                                      b: np.ndarray) -> None:
    counts = np.arange(len(a)) % 3
    repeated = np.repeat(a, counts)
    if len(repeated):
        weighted = ks.distances(a, b, counts[None, :].astype(float), np.ones((1, len(b))))[0]
        assert abs(weighted - ks.distance(repeated, b)) < 1e-12
    plain = ks.distances(a, b, np.ones((1, len(a))), np.ones((1, len(b))))[0]
    tailed = ks.distances(a, b, np.ones((1, len(a))), np.ones((1, len(b))), 0.05)[0]
    assert plain - 1e-12 <= tailed <= plain / (2 * np.sqrt(0.05)) + 1e-12


@settings(max_examples=40, deadline=None)
@given(samples, st.integers(0, 2**32 - 1))
def test_halves_of_one_sample_match_the_two_sample_distance(u: np.ndarray, seed: int) -> None:
    """The null's shortcut: two weightings of one sample, sorted once."""
    side = np.random.default_rng(seed).random((5, len(u))) < 0.5
    wa, wb = side.astype(float), (~side).astype(float)
    for tail in (None, 0.05):
        assert np.allclose(ks.split_distances(u, wa, wb, tail), ks.distances(u, u, wa, wb, tail),
                           rtol=0, atol=1e-12)


def test_exact_shapley_is_efficient_symmetric_and_matches_brute_force() -> None:
    weights = {0: 1.0, 1: 2.0, 2: 2.0, 3: 0.0}

    def value(s: frozenset[int]) -> float:
        return sum(weights[p] for p in s) ** 2

    phi = exact_shapley(list(weights), value)
    assert abs(sum(phi.values()) - value(frozenset(weights))) < 1e-9
    assert abs(phi[1] - phi[2]) < 1e-12 and phi[3] == 0.0
    # brute force over all orderings: the average marginal contribution
    for p in weights:
        total = 0.0
        orders = list(itertools.permutations(weights))
        for order in orders:
            before = frozenset(order[:order.index(p)])
            total += value(before | {p}) - value(before)
        assert abs(phi[p] - total / len(orders)) < 1e-9


def test_a_routed_payout_is_learned_exactly() -> None:
    """payout = 0.8 x amount when the claim is simple, else 0 (the published layout): a
    regime-wise linear mechanism, so the residuals are exactly 0."""
    rng = np.random.default_rng(0)
    amount = rng.uniform(100, 100_000, 400).round()
    simple = (rng.random(400) < 0.4).astype(float)
    frame = pd.DataFrame({"amount": amount, "simple": simple, "payout": 0.8 * amount * simple})
    enc = fit_encoding(list(frame), [frame])
    X = enc.encode(frame)
    mechanism = ContinuousMechanism(enc, 2, [0, 1], X)
    assert mechanism.model == "linear"
    assert np.all(mechanism.residuals == 0)
    value = mechanism.channels(X)[1]
    assert np.all(value.pit == 0.5)
    X[0, 2] += 1.0  # one payout off by one unit
    assert mechanism.channels(X)[1].pit[0] == 1.0
    assert mechanism.surprise(X)[0] > 100 > mechanism.surprise(X)[1:].max()


def test_a_router_is_decided_by_its_trigger_not_by_a_proxy() -> None:
    """When the discrete parents decide a node, they are its context, even if a continuous
    parent predicts it as well (here x decides the trigger)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    trigger = np.where(x > 0, 1.0, np.nan)
    ran = np.where(x > 0, 1.0, 0.0)
    frame = pd.DataFrame({"x": x, "trigger": trigger, "ran": ran})
    enc = fit_encoding(list(frame), [frame])
    X = enc.encode(frame)
    mechanism = DiscreteMechanism(enc, 2, [0, 1], X)
    assert mechanism.model == "regimes"
    moved = X.copy()
    moved[:, 1] = np.where(x > 1, 1.0, 0.0)  # the trigger (codes: 0 absent, 1 present)
    # now fires for x > 1 only ...
    moved[:, 2] = np.where(x > 1, 1.0, 0.0)  # ... and the node follows its trigger
    assert mechanism.surprise(moved).max() < 1
