"""The report's building blocks on their own: windows, the DAG picture, step statistics,
lineage text."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboard.dag import INPUTS, OUTPUTS, dag_svg, step_graph
from dashboard.lineage import describe_tensor
from dashboard.stats import step_stats, step_timeline
from dashboard.windows import WindowError, parse_window
from engine.spec import load_pipelines

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = load_pipelines(ROOT / "scenarios" / "pipelines" / "insurance_claims.yaml")[0]


def test_windows_parse_times_epochs_and_counts() -> None:
    w = parse_window("2024-05-01T10:00:00..1714561200")
    assert w.start == pd.Timestamp("2024-05-01T10:00:00Z")
    assert w.end == pd.Timestamp(1714561200, unit="s", tz="UTC")
    assert parse_window("..2024-05-01").start is None
    rows = list(range(10))
    assert rows[parse_window("first:7").positions] == list(range(7))
    assert rows[parse_window("last:3").positions] == [7, 8, 9]
    assert rows[parse_window("last:0").positions] == []
    assert rows[parse_window("requests:2..5").positions] == [2, 3, 4]
    assert rows[parse_window("requests:8..").positions] == [8, 9]
    for bad in ("yesterday", "2024-05-02..2024-05-01", "first:x", "soon..later", "requests:5..5"):
        with pytest.raises(WindowError):
            parse_window(bad)


def test_step_graph_follows_inputs_and_triggers() -> None:
    graph = step_graph(CLAIMS)
    assert set(graph) == {INPUTS, OUTPUTS, *(s.name for s in CLAIMS.steps)}
    assert graph.edges["calculate_claim_value", "classify_claim_value"]["kind"] == "input"
    assert graph.edges["classify_claim_value", "classify_claim_complexity"]["kind"] == "trigger"
    assert graph.has_edge(INPUTS, "classify_claim_complexity")
    assert set(graph.predecessors(OUTPUTS)) == {"calculate_simple_claim_payout",
                                                 "calculate_complex_claim_payout"}


def test_dag_svg_marks_the_ranked_steps_and_fetches_nothing() -> None:
    svg = dag_svg(step_graph(CLAIMS), notes={"classify_claim_value": ["p50 1 ms"]},
                  ranks={"classify_claim_complexity": 1, "calculate_claim_value": 2})
    assert re.search(r'<g class="node suspect" data-node="classify_claim_complexity">', svg)
    assert re.search(r'<g class="node candidate" data-node="calculate_claim_value">', svg)
    assert "#1 classify_claim_complexity" in svg and "p50 1 ms" in svg
    assert "http" not in svg and "url(#dag-arrow)" in svg
    # every edge is drawn, and every node once
    assert svg.count("marker-end=") == step_graph(CLAIMS).number_of_edges()
    assert svg.count('<g class="node') == step_graph(CLAIMS).number_of_nodes()


def _frame() -> pd.DataFrame:
    t0 = pd.Timestamp("2024-01-01T00:00:00Z")
    return pd.DataFrame({
        "time": [t0 + pd.Timedelta(seconds=s) for s in (0, 1, 2, 3, 4)],
        "a.status": ["ok", "ok", "error", "skipped", "timeout"],
        "a.latency_ms": [1.0, 3.0, 2.0, np.nan, np.nan],
        "b.status": ["ok", "ok", "ok", "ok", np.nan],
        "b.latency_ms": [5.0, 5.0, 5.0, 5.0, np.nan],
    })


def test_step_stats_count_runs_errors_and_latency() -> None:
    stats = step_stats(_frame())
    assert list(stats.index) == ["a", "b"]
    # a: ran ok twice and errored once (3 runs), failed twice of 4 non-skipped decisions
    assert stats.at["a", "runs"] == 3 and stats.at["a", "errors"] == 2
    assert stats.at["a", "error_rate"] == pytest.approx(2 / 4)
    assert stats.at["a", "latency_p50_ms"] == pytest.approx(2.0)
    assert stats.at["a", "throughput_rps"] == pytest.approx(3 / 4)  # 4 s of arrivals
    assert stats.at["b", "error_rate"] == 0.0


def test_step_timeline_bins_cover_every_decision() -> None:
    timeline = step_timeline(_frame(), bins=2)
    assert timeline.groupby("step")["runs"].sum().to_dict() == {"a": 3, "b": 4}
    assert timeline.groupby("step")["errors"].sum().to_dict() == {"a": 2, "b": 0}
    assert timeline["time"].nunique() == 2


def test_tensor_description_shows_values_or_summaries() -> None:
    assert describe_tensor("x", {"datatype": "FP64", "shape": [1], "data": np.array([2.5])}) == \
        "x FP64[1] = 2.5"
    assert describe_tensor("s", {"datatype": "BYTES", "shape": [1],
                                 "data": np.array([b"YES"], dtype=object)}) == "s BYTES[1] = YES"
    big = {"datatype": "FP32", "shape": [100], "data": None, "mean": 0.5, "std": 0.25,
           "min": 0.0, "max": 1.0}
    assert describe_tensor("e", big) == "e FP32[100]: mean 0.5, std 0.25, min 0, max 1"
