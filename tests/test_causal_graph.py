"""The causal graph read off pipeline specs: parents, steps, layouts, chaining."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from causal import build_graph
from causal.encoding import fit_encoding, latency_bucket
from tracing.layout import load_layout

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference" / "insurance-claims"
SPEC = REFERENCE / "insurance_claims.yaml"
LAYOUT = ROOT / "causal" / "layouts" / "insurance_claims.yaml"

PUBLISHED_EDGES = {
    ("input", "calculate_claim_value"), ("input", "simple_claims"), ("input", "complex_claims"),
    ("input", "calculate_simple_claim_payout"), ("input", "calculate_complex_claim_payout"),
    ("calculate_claim_value", "low_value_claims"), ("calculate_claim_value", "high_value_claims"),
    ("low_value_claims", "simple_claims"), ("low_value_claims", "complex_claims"),
    ("simple_claims", "calculate_simple_claim_payout"),
    ("complex_claims", "calculate_complex_claim_payout"),
    ("high_value_claims", "calculate_complex_claim_payout"),
    ("calculate_simple_claim_payout", "output"), ("calculate_complex_claim_payout", "output"),
}

TRACE_COLUMNS = [
    "time",
    *(f"insurance_claims.inputs.{t}" for t in
      ("total_claim_amount", "auto_year", "witnesses", "police_report_available", "claim_id")),
    *(f"{s}.{f}" for s in ("calculate_claim_value", "classify_claim_value",
                           "classify_claim_complexity", "calculate_simple_claim_payout",
                           "calculate_complex_claim_payout")
      for f in ("ran", "status", "latency_ms")),
    "calculate_claim_value.outputs.claim_value",
    "classify_claim_value.outputs.is_low_value_claim",
    "classify_claim_value.outputs.is_high_value_claim",
    "classify_claim_complexity.outputs.is_complex_claim",
    "classify_claim_complexity.outputs.is_simple_claim",
    "calculate_simple_claim_payout.outputs.payout",
    "calculate_complex_claim_payout.outputs.payout",
    "insurance_claims.outputs.payout",
]


def test_the_published_graph_comes_from_the_spec_and_the_layout() -> None:
    columns = pd.read_csv(REFERENCE / "data" / "normal_0.csv", nrows=1).columns
    graph = build_graph(SPEC, columns, load_layout(LAYOUT))
    assert set(graph.nodes) == set(columns)
    assert graph.edges() == PUBLISHED_EDGES
    assert graph.step("input") == "insurance_claims"
    assert graph.info["input"].ref == "insurance_claims.inputs.total_claim_amount"
    assert graph.step("output") == "insurance_claims.outputs"
    assert graph.step("simple_claims") == graph.step("complex_claims") == \
        "classify_claim_complexity"
    assert graph.targets == ["output"]


def test_trace_store_columns_give_parents_triggers_and_step_nodes() -> None:
    graph = build_graph(SPEC, TRACE_COLUMNS)
    assert "time" not in graph.nodes
    inputs = {f"insurance_claims.inputs.{t}" for t in
              ("total_claim_amount", "auto_year", "witnesses", "police_report_available")}
    trigger = "classify_claim_value.outputs.is_low_value_claim"
    for node in ("classify_claim_complexity.outputs.is_simple_claim",
                 "classify_claim_complexity.ran", "classify_claim_complexity.latency_ms",
                 "classify_claim_complexity.status"):
        assert set(graph.parents[node]) == inputs | {trigger}
        assert graph.step(node) == "classify_claim_complexity"
    # a step fed only by pipeline inputs is never skipped: no branch indicator for it
    assert "calculate_claim_value.ran" not in graph.nodes
    assert "classify_claim_value.ran" in graph.nodes
    assert set(graph.parents["insurance_claims.outputs.payout"]) == {
        "calculate_simple_claim_payout.outputs.payout",
        "calculate_complex_claim_payout.outputs.payout"}
    assert graph.parents["insurance_claims.inputs.claim_id"] == []
    assert graph.latency_nodes == [n for n in graph.nodes if n.endswith(".latency_ms")]


def _pipeline(name: str, steps: list[dict], **spec: object) -> dict:
    return {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Pipeline",
            "metadata": {"name": name}, "spec": {"steps": steps, **spec}}


def test_port_references_step_inputs_and_vector_summaries() -> None:
    spec = _pipeline("p", [
        {"name": "a"},  # no inputs: the pipeline's inputs
        {"name": "b", "inputs": ["a"]},  # a bare step: all its outputs
        {"name": "c", "inputs": ["b.inputs.u"], "tensorMap": {"b.inputs.u": "w"}},
    ])
    columns = ["p.inputs.x", "p.inputs.y", "a.outputs.u.mean", "a.outputs.u.max",
               "a.outputs.v", "b.outputs.z", "c.outputs.q", "p.outputs.q"]
    graph = build_graph([spec], columns)
    assert set(graph.parents["a.outputs.v"]) == {"p.inputs.x", "p.inputs.y"}
    assert set(graph.parents["b.outputs.z"]) == {"a.outputs.u.mean", "a.outputs.u.max",
                                                 "a.outputs.v"}
    # b.inputs.u is what b received as u: a's tensor u, both of its summaries
    assert set(graph.parents["c.outputs.q"]) == {"a.outputs.u.mean", "a.outputs.u.max"}
    # no output spec: the outputs are the sink steps' (c; b is consumed through b.inputs)
    assert graph.parents["p.outputs.q"] == ["c.outputs.q"]
    assert graph.step("a.outputs.u.max") == "a"


def test_chained_pipelines_are_one_graph() -> None:
    first = _pipeline("first", [{"name": "f", "inputs": ["first.inputs.x"]}],
                      output={"steps": ["f"]})
    second = _pipeline("second", [{"name": "g"}],
                       input={"externalInputs": ["first.outputs.y"],
                              "tensorMap": {"first.outputs.y": "z"}})
    columns = ["first.inputs.x", "f.outputs.y", "first.outputs.y", "second.inputs.z",
               "g.outputs.out", "second.outputs.out"]
    graph = build_graph([first, second], columns)
    assert graph.parents["first.outputs.y"] == ["f.outputs.y"]
    assert graph.parents["second.inputs.z"] == ["first.outputs.y"]
    assert graph.parents["g.outputs.out"] == ["second.inputs.z"]
    assert graph.targets == ["second.outputs.out"]
    assert graph.step("second.inputs.z") == "second"


def test_impossible_graphs_are_refused() -> None:
    spec = _pipeline("p", [{"name": "a", "inputs": ["b"]}, {"name": "b", "inputs": ["a"]}],
                     allowCycles=True)
    with pytest.raises(ValueError, match="cycle"):
        build_graph([spec], ["a.outputs.x", "b.outputs.y"])
    with pytest.raises(ValueError, match="maps both"):
        build_graph(SPEC, ["one", "two"], {"one": "calculate_claim_value.outputs.claim_value",
                                           "two": "calculate_claim_value.outputs.claim_value"})
    twice = [_pipeline("p", [{"name": "a"}]), _pipeline("q", [{"name": "a"}])]
    with pytest.raises(ValueError, match="cannot tell them apart"):
        build_graph(twice, ["a.outputs.x"])


def test_encoding_handles_booleans_strings_absent_values_and_latency() -> None:
    ref = pd.DataFrame({"flag": [True, False, True], "status": ["ok", "ok", None],
                        "value": [0.5, 1.5, float("nan")], "ms": [0.004, 0.006, 0.005]})
    inc = pd.DataFrame({"flag": [False, False, False], "status": ["error", "ok", "ok"],
                        "value": [2.5, 3.5, 4.5], "ms": [30.0, 31.0, 0.002]})
    enc = fit_encoding(["flag", "status", "value", "ms", "gone"], [ref, inc], coarse=["ms"])
    assert enc.levels[0] == [0.0, 1.0]
    assert enc.levels[1] == [None, "error", "ok"]
    assert enc.levels[2] is None  # not integers: continuous, NaN = absent
    assert enc.levels[4] == [None]  # never observed anywhere: one "absent" level
    X = enc.encode(inc)
    assert X[:, 0].tolist() == [0.0, 0.0, 0.0]
    assert X[:, 1].tolist() == [1.0, 2.0, 2.0]
    # sub-millisecond jitter is one bucket; 30 ms is far away
    assert latency_bucket(pd.Series([0.002, 0.006]).to_numpy()).tolist() == [0.0, 0.0]
    assert enc.decode(3, X[0, 3]) == latency_bucket(pd.Series([30.0]).to_numpy())[0] > 30
