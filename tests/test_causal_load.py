"""Step latencies under machine load: a machine that got slower is no slow step, and a
statistically clear but small change of one step's latency is no finding (causal.load)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import causal
from causal.load import MIN_LATENCY_CHANGE, latency_change, load_factor, unloaded
from causal.result import load_note

STEPS = ("parse", "embed", "score", "rank")
SPEC = {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": {"steps": [{"name": "parse", "inputs": ["p.inputs.x"]},
                           {"name": "embed", "inputs": ["parse.outputs.y"]},
                           {"name": "score", "inputs": ["embed.outputs.y"]},
                           {"name": "rank", "inputs": ["score.outputs.y"]}],
                 "output": {"steps": ["rank"]}}}
MEDIAN_MS = {"parse": 12.0, "embed": 30.0, "score": 20.0, "rank": 15.0}
LATENCY = [f"{s}.latency_ms" for s in STEPS]


def window(rng: np.random.Generator, n: int = 1500, load: float = 1.0,
           slower: dict[str, float] | None = None, jitter: dict[str, float] | None = None
           ) -> pd.DataFrame:
    """Requests through the chain; every step's latency times ``load``, and the steps of
    ``slower`` slower by their factor on top; ``jitter``: a step's log-normal sigma, if not
    0.1."""
    slower, jitter = slower or {}, jitter or {}
    frame = {"p.inputs.x": rng.normal(size=n)}
    value = frame["p.inputs.x"]
    for step in STEPS:
        value = 0.5 * value + rng.normal(scale=0.1, size=n)
        frame[f"{step}.outputs.y"] = value
        typical = MEDIAN_MS[step] * load * slower.get(step, 1.0)
        frame[f"{step}.latency_ms"] = typical * rng.lognormal(sigma=jitter.get(step, 0.1), size=n)
    frame["p.outputs.y"] = value
    return pd.DataFrame(frame)


def test_the_load_factor_is_the_steps_common_change() -> None:
    rng = np.random.default_rng(0)
    reference = window(rng)
    assert load_factor(LATENCY, reference, window(rng, load=1.8)) == pytest.approx(1.8, rel=0.03)
    # one slow step of four does not move it
    one_slow = window(rng, load=1.8, slower={"embed": 5.0})
    assert load_factor(LATENCY, reference, one_slow) == pytest.approx(1.8, rel=0.05)
    # two steps cannot tell a slow step from a slow machine
    assert load_factor(LATENCY[:2], reference, one_slow) == 1.0
    adjusted = unloaded(LATENCY, one_slow, 1.8)
    change = latency_change(LATENCY, reference, adjusted)
    assert change["embed.latency_ms"].factor > 4 and change["embed.latency_ms"].material
    assert all(change[n].factor < 1.1 and not change[n].material
               for n in LATENCY if n != "embed.latency_ms")
    assert adjusted["p.inputs.x"].equals(one_slow["p.inputs.x"])
    constant = pd.DataFrame({"s.latency_ms": [2.0] * 20})
    assert latency_change(["s.latency_ms"], constant, constant)["s.latency_ms"].spreads == 0.0
    assert latency_change(["s.latency_ms"], constant, constant * 3)["s.latency_ms"].material


def test_a_slower_machine_is_no_fault() -> None:
    rng = np.random.default_rng(1)
    reference, incident = window(rng), window(rng, load=2.0)
    # read step by step, every latency moved by more than a material amount
    assert all(c.material for c in latency_change(LATENCY, reference, incident).values())
    ranking = causal.localise(SPEC, reference, incident)
    assert ranking.no_fault, ranking.table(4)
    assert ranking.details["load_factor"] == pytest.approx(2.0, rel=0.03)
    assert "ran 2.0" in load_note(ranking.details) and load_note(ranking.details) in ranking.table()
    assert load_note({"load_factor": 1.03}) == load_note({}) == ""


def test_a_slow_step_on_a_slower_machine_is_found() -> None:
    rng = np.random.default_rng(2)
    reference, incident = window(rng), window(rng, load=1.5, slower={"score": 2.5})
    ranking = causal.localise(SPEC, reference, incident)
    assert not ranking.no_fault and ranking.top.step == "score", ranking.table(4)
    assert ranking.top.node == "score.latency_ms"
    assert ranking.top.evidence["latency_change"] == pytest.approx(2.5, rel=0.1)


def test_a_small_change_of_one_latency_is_no_finding() -> None:
    rng = np.random.default_rng(3)
    reference, incident = window(rng), window(rng, slower={"score": 1.25})
    ranking = causal.localise(SPEC, reference, incident)
    score = next(c for c in ranking.candidates if c.step == "score")
    # the departure itself is clear; it is its size that is not a slow step
    assert score.score > (ranking.threshold or 0.0) * 2
    assert score.evidence["latency_change"] < MIN_LATENCY_CHANGE
    assert ranking.no_fault, ranking.table(4)


def test_a_change_within_a_steps_usual_spread_is_no_finding() -> None:
    """A step whose latency varies tenfold from request to request is not slow when its
    median doubles; it is when it grows twentyfold."""
    rng = np.random.default_rng(5)
    wide = {"score": 0.8}
    reference = window(rng, n=3000, jitter=wide)
    doubled = causal.localise(SPEC, reference, window(rng, n=3000, slower={"score": 2.0},
                                                      jitter=wide))
    score = next(c for c in doubled.candidates if c.step == "score")
    assert score.score > (doubled.threshold or 0.0)
    assert score.evidence["latency_change"] > MIN_LATENCY_CHANGE
    assert score.evidence["latency_spreads"] < 0.5
    assert doubled.no_fault, doubled.table(4)
    much = causal.localise(SPEC, reference, window(rng, n=3000, slower={"score": 20.0},
                                                   jitter=wide))
    assert not much.no_fault and much.top.step == "score", much.table(4)


def test_one_request_on_a_busy_machine_against_one_slow_step() -> None:
    rng = np.random.default_rng(4)
    reference = window(rng)
    busy = causal.explain_request(SPEC, reference, window(rng, n=1, load=2.5).iloc[0])
    assert busy.no_fault and busy.details["load_factor"] == pytest.approx(2.5, rel=0.25)
    slow = causal.explain_request(SPEC, reference,
                                  window(rng, n=1, slower={"embed": 4.0}).iloc[0])
    assert slow.details["load_factor"] == pytest.approx(1.0, rel=0.25)
    assert not slow.no_fault and slow.top.step == "embed", slow.table(4)
    assert slow.top.evidence["latency_change"] > MIN_LATENCY_CHANGE
