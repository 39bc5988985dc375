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


ROUTED_SPEC = {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Pipeline",
               "metadata": {"name": "b"},
               "spec": {"steps": [{"name": "router", "inputs": ["b.inputs.x"]},
                                  {"name": "rare", "inputs": ["b.inputs.x"],
                                   "triggers": ["router.outputs.flag"]}],
                        "output": {"steps": ["rare"]}}}
ROUTED_STEPS = {"b", "router", "rare", "b.outputs"}
# the router's boolean flag fires for x > cut, and only then does "rare" run; the fault is a
# moved cut. (reference cut, incident cut, drop rare's column where it never ran)
ODD_NODES = {
    "boolean node": (0.5, -0.5, False),
    "node never observed in the reference": (10.0, 0.0, False),
    "node never observed in the incident": (0.0, 10.0, False),
    "node without a column in the reference": (10.0, 0.0, True),
}
QUICK = {"dowhy-shift": {"num_samples": 200, "test_samples": 200},
         "dowhy-anomaly": {"num_distribution_samples": 200}}


def routed_frame(cut: float, rng: np.random.Generator, drop_unobserved: bool
                 ) -> pd.DataFrame:
    x = rng.normal(size=1000)  # a single request's verdict needs a large enough reference
    flag = x > cut
    y = np.where(flag, 2 * x, np.nan)
    frame = pd.DataFrame({"b.inputs.x": x, "router.outputs.flag": flag,
                          "rare.outputs.y": y, "b.outputs.y": y})
    if drop_unobserved and not flag.any():  # a trace store has no column for it
        frame = frame.drop(columns=["rare.outputs.y"])
    return frame


def odd_windows(case: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Reference, incident, and the median one of the incident requests that the moved cut
    decided differently."""
    ref_cut, inc_cut, drop = ODD_NODES[case]
    rng = np.random.default_rng(0)
    reference = routed_frame(ref_cut, rng, drop)
    incident = routed_frame(inc_cut, rng, drop)
    x = incident["b.inputs.x"]
    moved = x[(x > min(ref_cut, inc_cut)) & (x <= max(ref_cut, inc_cut))]
    return reference, incident, incident.loc[(moved - moved.median()).abs().idxmin()]


def test_the_odd_windows_are_what_they_claim() -> None:
    reference, incident, _ = odd_windows("boolean node")
    assert reference["router.outputs.flag"].dtype == bool
    assert reference["router.outputs.flag"].nunique() == incident["router.outputs.flag"].nunique() == 2
    assert odd_windows("node never observed in the reference")[0]["rare.outputs.y"].isna().all()
    assert odd_windows("node never observed in the incident")[1]["rare.outputs.y"].isna().all()
    reference, incident, _ = odd_windows("node without a column in the reference")
    assert "rare.outputs.y" not in reference and incident["rare.outputs.y"].notna().any()


@pytest.mark.parametrize("case", sorted(ODD_NODES))
@pytest.mark.parametrize("method", sorted(causal.METHODS))
def test_boolean_and_unobserved_nodes_get_a_ranking(method: str, case: str) -> None:
    """Every method, in every mode it has: no crash, every step ranked with a finite score;
    ours names the router, whose cut moved."""
    reference, incident, request = odd_windows(case)
    opts = QUICK.get(method, {})
    for mode in sorted(causal.METHODS[method].modes):
        ranking = (causal.localise(ROUTED_SPEC, reference, incident, method, **opts)
                   if mode == "shift" else
                   causal.explain_request(ROUTED_SPEC, reference, request, method, **opts))
        assert ranking.mode == mode
        assert sorted(ranking.steps()) == sorted(ROUTED_STEPS)
        assert all(np.isfinite(c.score) for c in ranking.candidates)
        json.loads(ranking.to_json())
        if method == "flowcause":
            assert ranking.top.step == "router" and not ranking.no_fault, ranking.table(4)


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
