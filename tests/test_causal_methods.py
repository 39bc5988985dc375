"""Localisation on synthetic pipelines with a known fault: windows, single requests, odd
nodes (booleans, nodes never observed in one window), the method registry and JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import causal
from causal.methods import UnsupportedMode
from causal.synthetic import Fault, make_incident

INCIDENTS = 20


def test_ours_finds_the_injected_fault_and_beats_the_simple_baselines() -> None:
    hits = dict.fromkeys(["flowcause", "zscore", "first-anomalous", "random"], 0)
    for seed in range(INCIDENTS):
        incident = make_incident(10, seed)
        graph = causal.build_graph(incident.pipeline.spec, incident.reference.columns)
        for method in hits:
            ranking = causal.localise(graph, incident.reference, incident.incident, method)
            hits[method] += ranking.top.step == incident.fault.step and not ranking.no_fault
    assert hits["flowcause"] >= INCIDENTS - 2, hits
    assert hits["flowcause"] > max(v for k, v in hits.items() if k != "flowcause"), hits


def test_no_fault_when_nothing_changed() -> None:
    alarms = 0
    for seed in range(INCIDENTS):
        incident = make_incident(10, seed)
        normal = incident.pipeline.sample(500, np.random.default_rng(seed + 1000))
        ranking = causal.localise(incident.pipeline.spec, incident.reference, normal)
        alarms += not ranking.no_fault
        assert ranking.threshold is not None and ranking.candidates
    assert alarms <= 2


def test_a_single_bad_request_names_its_step() -> None:
    named = quiet = 0
    for seed in range(10):
        incident = make_incident(30, seed)
        pipe, rng = incident.pipeline, np.random.default_rng(seed)
        exact = [s for s in pipe.steps[:-1] if s.noise == 0 and s.kind != "router"
                 and s.trigger is None]
        step = exact[seed % len(exact)]
        bad = pipe.sample(1, rng, Fault(step.name, step.outputs[0], "offset", 1.0))
        ranking = causal.explain_request(pipe.spec, incident.reference, bad.iloc[0])
        assert ranking.mode == "anomaly"
        named += ranking.top.step == step.name and not ranking.no_fault
        quiet += causal.explain_request(pipe.spec, incident.reference,
                                        pipe.sample(1, rng)).no_fault
    assert named >= 9 and quiet >= 8, (named, quiet)


def router_frames() -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """A router whose boolean flag never fires in the reference, so the step it triggers
    never runs there (its output is absent throughout); in the incident the router fires."""
    spec = {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Pipeline",
            "metadata": {"name": "b"},
            "spec": {"steps": [{"name": "router", "inputs": ["b.inputs.x"]},
                               {"name": "rare", "inputs": ["b.inputs.x"],
                                "triggers": ["router.outputs.flag"]}],
                     "output": {"steps": ["rare"]}}}
    rng = np.random.default_rng(0)

    def frame(cut: float) -> pd.DataFrame:
        x = rng.normal(size=400)
        flag = x > cut
        y = np.where(flag, 2 * x, np.nan)
        return pd.DataFrame({"b.inputs.x": x, "router.outputs.flag": flag,
                             "rare.outputs.y": y, "b.outputs.y": y})

    return spec, frame(10.0), frame(0.0)


def test_boolean_nodes_and_nodes_absent_from_a_window() -> None:
    spec, reference, incident = router_frames()
    assert reference["router.outputs.flag"].dtype == bool
    assert reference["rare.outputs.y"].isna().all()
    ranking = causal.localise(spec, reference, incident)
    assert not ranking.no_fault
    assert ranking.top.step == "router"
    assert set(ranking.steps()) == {"b", "router", "rare", "b.outputs"}
    for method in ("zscore", "first-anomalous", "random"):
        assert causal.localise(spec, reference, incident, method).candidates
    row = causal.explain_request(spec, reference, incident[incident["router.outputs.flag"]].iloc[0])
    assert row.top.step == "router"
    json.loads(ranking.to_json())


@pytest.mark.parametrize("method", sorted(causal.METHODS))
def test_every_method_ranks_every_step_it_can(method: str) -> None:
    incident = make_incident(8, 3)
    spec, reference, bad = incident.pipeline.spec, incident.reference, incident.incident
    cls = causal.METHODS[method]
    fast = {"num_samples": 200, "test_samples": 200} if method == "dowhy-shift" else (
        {"num_distribution_samples": 200} if method == "dowhy-anomaly" else {})
    graph = causal.graph_for(spec, reference, bad)
    for mode, run in (("shift", lambda: causal.localise(spec, reference, bad, method, **fast)),
                      ("anomaly", lambda: causal.explain_request(spec, reference, bad.iloc[:1],
                                                                 method, **fast))):
        if mode not in cls.modes:
            with pytest.raises(UnsupportedMode):
                run()
            continue
        ranking = run()
        assert ranking.method == method and ranking.mode == mode and ranking.seconds > 0
        steps = ranking.steps()
        assert len(steps) == len(set(steps))
        assert set(steps) <= {graph.step(n) for n in graph.nodes}
        scores = [c.score for c in ranking.candidates]
        assert all(np.isfinite(scores))
        if method not in ("first-anomalous", "flowcause"):  # these two reorder by design
            assert scores == sorted(scores, reverse=True)
        doc = json.loads(ranking.to_json())
        assert doc["method"] == method and len(doc["candidates"]) == len(steps)
        assert {"node", "step", "score", "confidence", "evidence"} <= set(doc["candidates"][0])


def test_unknown_methods_and_options_are_refused() -> None:
    incident = make_incident(8, 0)
    with pytest.raises(ValueError, match="unknown method"):
        causal.localise(incident.pipeline.spec, incident.reference, incident.incident, "magic")
    with pytest.raises(TypeError):
        causal.localise(incident.pipeline.spec, incident.reference, incident.incident,
                        bootstraps=3)
