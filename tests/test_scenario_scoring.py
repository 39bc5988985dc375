"""Scoring rankings against ground truth, and the suite's table built from the scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest

from scenarios.result import ScenarioResult, format_ranking
from scenarios.score import suspects, truth_nodes, truth_rank
from scenarios.suite import ALL, format_table, summarise


@dataclass
class FakeCandidate:
    node: str
    step: str | None
    score: float
    confidence: float | None = 0.5
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeRanking:
    candidates: list[FakeCandidate]
    no_fault: bool = False


RANKING = FakeRanking([
    FakeCandidate("b.outputs.y", "b", 9.0),
    FakeCandidate("b.latency_ms", "b", 8.0),
    FakeCandidate("p.inputs.x", "p", 7.0),
    FakeCandidate("a.outputs.y", "a", 6.0),
])


def test_suspects_are_distinct_steps_in_rank_order() -> None:
    named = suspects(RANKING)
    assert [s["name"] for s in named] == ["b", "p", "a"]
    assert named[0]["node"] == "b.outputs.y" and named[0]["score"] == 9.0


def test_truth_rank_counts_distinct_suspects() -> None:
    named = suspects(RANKING)
    assert truth_rank(named, ["a"], no_fault=False) == 3
    assert truth_rank(named, truth_nodes(["inputs"], "p"), no_fault=False) == 2
    assert truth_rank(named, ["zzz"], no_fault=False) is None
    assert truth_rank(named, ["b"], no_fault=True) is None  # "no fault" misses any fault


def result(scenario: str, method: str, rank: int | None, truth: list[str], no_fault: bool = False,
           seconds: float = 0.1) -> ScenarioResult:
    named = [{"name": n, "node": f"{n}.outputs.y", "score": 1.0, "confidence": 0.5}
             for n in ("a", "b", "c", "d")]
    return ScenarioResult(scenario=scenario, seed=0, transport="embedded", method=method, target="p",
                          pipelines=["p"], ground_truth=truth, suspects=named, no_fault=no_fault,
                          rank=rank, seconds=seconds, ranking={})


def test_hits_and_correctness() -> None:
    second = result("s", "m", 2, ["b"])
    assert (second.hit(1), second.hit(3), second.correct) == (False, True, False)
    control = result("c", "m", None, [], no_fault=True)
    assert control.control and control.hit(1) is None and control.correct
    alarm = result("c", "m", None, [], no_fault=False)
    assert not alarm.correct


def test_summary_per_scenario_and_pooled() -> None:
    results = [
        result("s1", "ours", 1, ["a"], seconds=0.2), result("s1", "ours", 2, ["b"], seconds=0.4),
        result("s1", "base", 4, ["d"]), result("s1", "base", None, ["x"]),
        result("c1", "ours", None, [], no_fault=True), result("c1", "ours", None, [], no_fault=False),
        result("c1", "base", None, [], no_fault=False), result("c1", "base", None, [], no_fault=False),
    ]
    summary = summarise(results).set_index(["scenario", "method"])
    assert summary.loc[("s1", "ours"), "top1"] == 0.5
    assert summary.loc[("s1", "ours"), "top3"] == 1.0
    assert summary.loc[("s1", "ours"), "seconds"] == pytest.approx(0.3)
    assert summary.loc[("s1", "base"), "top3"] == 0.0
    assert summary.loc[("c1", "ours"), "specificity"] == 0.5
    assert summary.loc[(ALL, "ours"), "runs"] == 4
    assert summary.loc[(ALL, "ours"), "top1"] == 0.5
    assert summary.loc[(ALL, "base"), "specificity"] == 0.0
    table = format_table(summarise(results))
    assert "top-1" in table and "specificity" in table and table.count("\n") == 8


def test_single_request_explanations_are_pooled_over_requests() -> None:
    fault_runs = [result("s1", "ours", 1, ["a"]), result("s1", "ours", 1, ["a"])]
    fault_runs[0].explained = {"requests": 10, "named": 9, "quiet": 1}
    fault_runs[1].explained = {"requests": 30, "named": 3, "quiet": 20}
    control = result("c1", "ours", None, [], no_fault=True)
    control.explained = {"requests": 20, "named": 0, "quiet": 19}
    unexplained = result("s1", "shift-only", 1, ["a"])
    summary = summarise([*fault_runs, control, unexplained]).set_index(["scenario", "method"])
    assert summary.loc[("s1", "ours"), "request_top1"] == pytest.approx(12 / 40)
    assert pd.isna(summary.loc[("s1", "ours"), "request_specificity"])
    assert summary.loc[(ALL, "ours"), "request_specificity"] == pytest.approx(19 / 20)
    assert pd.isna(summary.loc[("s1", "shift-only"), "request_top1"])
    table = format_table(summarise([*fault_runs, control, unexplained]))
    assert "request top-1" in table and "0.300" in table and "0.950" in table


def test_format_ranking_marks_the_ground_truth() -> None:
    text = format_ranking(result("s", "m", 3, ["c"]))
    lines = text.splitlines()
    assert "<- ground truth" in lines[3] and " c " in lines[3]
    assert "ranked #3" in lines[-1]


def test_a_ranking_that_could_not_judge_is_neither_quiet_nor_a_hit() -> None:
    from dataclasses import replace

    from scenarios.result import verdict

    unjudged = {"judged": False, "verdict": "not enough data to judge"}
    control = replace(result("c", "m", None, []), suspects=[], ranking=unjudged)
    fault = replace(result("f", "m", None, ["b"]), suspects=[], ranking=unjudged)
    assert not control.correct and verdict(control) == "not counted as correct: not enough data to judge"
    assert fault.hit(1) is False and verdict(fault) == "missed: not enough data to judge"
