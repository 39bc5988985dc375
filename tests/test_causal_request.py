"""One request (explain_request): a slow step is named however few latency buckets the
reference shows (causal.slowness), but not for a slowness a pause of the machine could
cause; a step that failed on the request, dropped an output or put NaN into one, is named
when it hardly ever does; a node with rare normal outliers does not hide a fault elsewhere
(causal.calibration); a router that breaks its rule is named (causal.mechanisms)."""

from __future__ import annotations

import numpy as np
import pandas as pd

import causal
from causal.load import latency_change
from causal.slowness import MIN_REQUEST_SPREADS, Slowness, cross_fitted
from tests.test_causal_load import SPEC, window


def test_slowness_scores_how_far_above_the_reference_a_latency_lies() -> None:
    rng = np.random.default_rng(0)
    reference = 0.2 * rng.lognormal(sigma=0.3, size=500)  # a fast step: a few buckets
    slowness = Slowness.of(reference)
    faster, usual, slow, much = slowness.surprise(np.array([0.01, 0.2, 2.0, 70.0]))
    assert faster < 0.5 and usual < 0.5
    assert 3 < slow < much
    assert much > 100
    assert slowness.surprise(np.array([np.nan]))[0] == 0.0
    assert Slowness.of(np.array([np.nan, np.nan])).surprise(np.array([70.0]))[0] == 0.0
    held_out = cross_fitted(reference, np.arange(500) < 250)
    assert held_out.shape == (500,) and np.quantile(held_out, 0.99) < slow


def test_one_request_with_a_step_far_slower_than_ever_names_it() -> None:
    """The reference's latencies take fewer than ten buckets, so the latency node is judged
    as a category (an unseen level is merely rare); the ordinal score still names it."""
    rng = np.random.default_rng(1)
    reference = window(rng, n=400)
    reference["embed.latency_ms"] = 0.2 * rng.lognormal(sigma=0.2, size=len(reference))
    request = window(rng, n=1)
    request["embed.latency_ms"] = 70.0
    ranking = causal.explain_request(SPEC, reference, request.iloc[0])
    assert ranking.details["latency_threshold"] < ranking.top.score
    assert not ranking.no_fault and ranking.top.node == "embed.latency_ms", ranking.table(4)
    assert ranking.top.evidence["model"] == "tree"  # judged as a category by its mechanism


def test_one_request_twice_as_slow_as_usual_is_no_finding() -> None:
    """Twice the median is a clear, material change for a window; for a single execution
    it lies within what a pause of the machine does now and then."""
    rng = np.random.default_rng(2)
    reference = window(rng)
    request = reference.median().to_frame().T  # a typical request, but for embed's time
    request["embed.latency_ms"] *= 2.0
    change = latency_change(["embed.latency_ms"], reference, request)["embed.latency_ms"]
    assert change.material and change.spreads < MIN_REQUEST_SPREADS
    ranking = causal.explain_request(SPEC, reference, request.iloc[0])
    assert ranking.no_fault, ranking.table(4)
    localised = causal.localise(SPEC, reference, window(rng, n=300, slower={"embed": 2.0}))
    assert not localised.no_fault and localised.top.step == "embed"


def test_values_are_judged_against_values_only() -> None:
    rng = np.random.default_rng(3)
    reference = window(rng)
    ranking = causal.explain_request(SPEC, reference, window(rng, n=1).iloc[0])
    assert ranking.details["latency_threshold"] != ranking.threshold
    no_latency = causal.explain_request(SPEC, reference.drop(columns=[
        c for c in reference if c.endswith("latency_ms")]), window(rng, n=1).iloc[0])
    assert no_latency.details["latency_threshold"] == np.inf


def with_status(frame: pd.DataFrame, failed_rows: int = 0) -> pd.DataFrame:
    """``frame`` with an ``embed.status`` column: ok, or error (and no output) in the first
    ``failed_rows`` rows."""
    frame = frame.copy()
    frame["embed.status"] = ["error"] * failed_rows + ["ok"] * (len(frame) - failed_rows)
    frame.loc[frame.index[:failed_rows], "embed.outputs.y"] = np.nan
    return frame


def test_a_step_that_failed_on_the_request_is_named() -> None:
    rng = np.random.default_rng(4)
    reference = window(rng, n=600)
    request = with_status(reference.median(numeric_only=True).to_frame().T, failed_rows=1)
    ranking = causal.explain_request(SPEC, with_status(reference), request.iloc[0])
    assert not ranking.no_fault and ranking.top.node == "embed.status", ranking.table(4)
    assert ranking.top.evidence["failed"] is True
    # a step that fails now and then in the reference too: one more failure is no finding
    flaky = with_status(reference, failed_rows=60)
    assert causal.explain_request(SPEC, flaky, request.iloc[0]).no_fault
    # a step the reference never ran has never been seen failing either
    never_ran = with_status(reference)
    never_ran["embed.status"] = "skipped"
    unseen = causal.explain_request(SPEC, never_ran, request.iloc[0])
    assert not unseen.no_fault and unseen.top.evidence.get("failed") is True, unseen.table(4)


def test_a_node_with_rare_normal_outliers_does_not_hide_a_fault_elsewhere() -> None:
    """An input that sits on one value but for a few requests (the maximum pixel of a
    frame: 255, but for the odd dark one) makes each of those requests "impossible" to its
    normal model; held to what the reference shows, it no longer sets the threshold."""
    rng = np.random.default_rng(5)
    reference = window(rng, n=800)
    dark = rng.random(len(reference)) < 0.03
    reference["p.inputs.brightest"] = np.where(dark, rng.uniform(0, 50, len(reference)), 255.0)
    request = reference.median(numeric_only=True).to_frame().T
    request["score.outputs.y"] += 2.0  # score computes a wrong value
    request["rank.outputs.y"] = 0.5 * request["score.outputs.y"]
    request["p.outputs.y"] = request["rank.outputs.y"]
    ranking = causal.explain_request(SPEC, reference, request.iloc[0])
    assert ranking.threshold < 10
    assert not ranking.no_fault and ranking.top.step == "score", ranking.table(4)
    dark_request = reference[dark].iloc[:1]  # a dark frame is no fault
    assert causal.explain_request(SPEC, reference, dark_request.iloc[0]).no_fault


def test_a_step_that_ran_fine_but_dropped_its_output_is_named() -> None:
    rng = np.random.default_rng(6)
    reference = with_status(window(rng, n=600))
    request = reference.median(numeric_only=True).to_frame().T
    request["embed.status"] = "ok"
    request["embed.outputs.y"] = np.nan  # embed said ok and produced nothing
    ranking = causal.explain_request(SPEC, reference, request.iloc[0])
    assert not ranking.no_fault and ranking.top.node == "embed.outputs.y", ranking.table(4)
    assert ranking.top.evidence["dropped"] is True
    # where it often produces nothing in the reference too, one more time is no finding
    sparse = reference.copy()
    sparse.loc[sparse.index[:60], "embed.outputs.y"] = np.nan
    assert causal.explain_request(SPEC, sparse, request.iloc[0]).no_fault


def test_a_step_that_put_nan_into_an_output_is_named() -> None:
    """A vector output's NaN elements leave its other statistics (over the rest) ordinary;
    its NaN count, 0 throughout the reference, is merely an unseen level to a mechanism."""
    rng = np.random.default_rng(8)
    reference = with_status(window(rng, n=600))
    for stat in ("mean", "nan_count"):
        reference[f"embed.outputs.v.{stat}"] = reference["embed.outputs.y"] if stat == "mean" else 0
    request = reference.median(numeric_only=True).to_frame().T
    request["embed.status"] = "ok"
    assert causal.explain_request(SPEC, reference, request.iloc[0]).no_fault
    request["embed.outputs.v.nan_count"] = 3.0
    ranking = causal.explain_request(SPEC, reference, request.iloc[0])
    assert not ranking.no_fault and ranking.top.node == "embed.outputs.v.nan_count", ranking.table(4)
    assert ranking.top.evidence["nan"] is True
    # where NaNs are common in the reference too, a few more are no finding
    common = reference.copy()
    common.loc[common.index[:60], "embed.outputs.v.nan_count"] = 2
    assert causal.explain_request(SPEC, common, request.iloc[0]).no_fault


def test_a_slow_step_is_named_beside_the_references_own_slow_requests() -> None:
    """A fast step's latency sits in one or two buckets, with a few slower requests (a
    pause of the machine): its mechanism's surprises are inflated, and dividing the
    slowness score by that inflation would hide a step forty times slower."""
    rng = np.random.default_rng(7)
    reference = window(rng, n=800)
    paused = rng.random(len(reference)) < 0.02
    reference["embed.latency_ms"] = np.where(paused, rng.uniform(1.0, 5.0, len(reference)),
                                             0.18 * rng.lognormal(sigma=0.05, size=len(reference)))
    request = reference.median(numeric_only=True).to_frame().T
    request["embed.latency_ms"] = 40.0
    ranking = causal.explain_request(SPEC, reference, request.iloc[0])
    assert not ranking.no_fault and ranking.top.node == "embed.latency_ms", ranking.table(4)


ROUTER = {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Pipeline",
          "metadata": {"name": "p"},
          "spec": {"steps": [{"name": "route", "inputs": ["p.inputs.a", "p.inputs.b"]},
                             {"name": "rare", "inputs": ["p.inputs.a"],
                              "triggers": ["route.outputs.rare"]},
                             {"name": "usual", "inputs": ["p.inputs.a"],
                              "triggers": ["route.outputs.usual"]}],
                   "output": {"steps": ["rare", "usual"], "stepsJoin": "any"}}}


def routed(a: np.ndarray, b: np.ndarray, rare: np.ndarray) -> pd.DataFrame:
    """Requests through ROUTER: ``rare`` says where the router sent each."""
    payout = np.where(rare, 0.6 * a, 0.8 * a)
    return pd.DataFrame({"p.inputs.a": a, "p.inputs.b": b,
                         "route.outputs.rare": np.where(rare, 1.0, np.nan),
                         "route.outputs.usual": np.where(rare, np.nan, 1.0),
                         "rare.outputs.y": np.where(rare, payout, np.nan),
                         "usual.outputs.y": np.where(rare, np.nan, payout),
                         "p.outputs.y": payout})


def test_a_router_that_breaks_its_rule_on_one_request_is_named() -> None:
    """The router sends a request the wrong way, deep inside a region its rule (two
    thresholds) decides. The reference never broke the rule, so the break is as surprising
    as all its requests make it, not as a leaf of a few dozen would (below the threshold:
    so it was before rules)."""
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=1000), rng.normal(size=1000)
    rule = (a > 0.8) & (b > 0.8)
    reference = routed(a, b, rule)
    inside = reference[rule].median()  # the middle of the rare region
    wrong = routed(np.array([inside["p.inputs.a"]]), np.array([inside["p.inputs.b"]]),
                   np.array([False]))
    ranking = causal.explain_request(ROUTER, reference, wrong.iloc[0])
    assert not ranking.no_fault and ranking.top.step == "route", ranking.table(4)
    right = routed(wrong["p.inputs.a"].to_numpy(), wrong["p.inputs.b"].to_numpy(),
                   np.array([True]))
    assert causal.explain_request(ROUTER, reference, right.iloc[0]).no_fault
    # a router that is not a rule (one request in ten goes either way) is no finding there
    noisy = routed(a, b, rule ^ (rng.random(1000) < 0.1))
    assert causal.explain_request(ROUTER, noisy, wrong.iloc[0]).no_fault
