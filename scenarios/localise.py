"""Localising a scenario run: the trace store's two windows, ranked by ``causal.localise``,
scored against the ground truth."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

import causal
from engine.spec import Pipeline
from scenarios.result import ScenarioResult
from scenarios.runner import Execution
from scenarios.score import suspects, truth_nodes, truth_rank
from tracing.store import TraceStore


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def traced_pipelines(execution: Execution, store: TraceStore) -> list[Pipeline]:
    """The scenario's pipelines that traffic reached, in spec order."""
    recorded = set(store.pipelines())
    return [p for p in execution.pipelines if p.name in recorded]


def window_frame(store: TraceStore, pipelines: list[Pipeline], target: str,
                 window: tuple[float, float]) -> pd.DataFrame:
    """The window's frame; for chained pipelines their frames side by side, one row per
    request (the request id is the same in every pipeline it passes)."""
    frames = [store.frame(p.name, *window) for p in pipelines]
    if len(frames) == 1:
        return frames[0]
    names = [p.name for p in pipelines]
    first = frames[names.index(target)] if target in names else frames[0]
    rest = [f.drop(columns="time") for f in frames if f is not first]
    return first.join(rest, how="left")


def explain_requests(pipelines: list[Pipeline], reference: pd.DataFrame,
                     incident: pd.DataFrame, method: str, truth: list[str], count: int
                     ) -> dict[str, int]:
    """Explain ``count`` evenly spaced incident requests one at a time: of how many the
    method named the ground truth first, and for how many it said "no fault". Empty when
    the method cannot explain a single request. A fault need not show in every request
    (an error on a third of them, a shifted distribution), so for a fault run the share
    named is bounded by the share the fault reached; for a control, every "no fault" is
    right."""
    if count <= 0 or "anomaly" not in causal.make_method(method).modes or not len(incident):
        return {}
    rows = np.unique(np.linspace(0, len(incident) - 1, min(count, len(incident))).round())
    named = quiet = 0
    for row in rows.astype(int):
        ranking = causal.explain_request(pipelines, reference, incident.iloc[[row]],
                                         method=method)
        quiet += bool(ranking.no_fault)
        named += truth_rank(suspects(ranking), truth, bool(ranking.no_fault)) == 1
    return {"requests": len(rows), "named": named, "quiet": quiet}


def localise(execution: Execution, method: str = "flowcause", requests: int = 0
             ) -> ScenarioResult:
    """Rank the run's incident window against its reference window with ``method``; with
    ``requests``, also explain that many incident requests one at a time."""
    store = TraceStore(execution.store)
    pipelines = traced_pipelines(execution, store)
    reference = window_frame(store, pipelines, execution.target, execution.reference)
    incident = window_frame(store, pipelines, execution.target, execution.incident)
    ranking = causal.localise(pipelines, reference, incident, method=method)
    named = suspects(ranking)
    scenario = execution.scenario
    truth = truth_nodes(scenario.ground_truth, execution.target)
    return ScenarioResult(
        scenario=scenario.name, seed=execution.seed, transport=execution.transport,
        method=method, target=execution.target, pipelines=[p.name for p in pipelines],
        ground_truth=truth, suspects=named, no_fault=bool(ranking.no_fault),
        rank=truth_rank(named, truth, bool(ranking.no_fault)), seconds=float(ranking.seconds),
        ranking=ranking.to_dict(),
        faults=[f.model_dump() for f in scenario.faults],
        requests={"warmup": scenario.phases.warmup, "healthy": scenario.phases.healthy,
                  "incident": scenario.phases.incident,
                  "reference_rows": len(reference), "incident_rows": len(incident),
                  "errors": execution.errors, "lost": execution.lost,
                  "seconds": round(execution.seconds, 3),
                  "per_second": round(execution.rate, 1)},
        windows={"reference": [_iso(t) for t in execution.reference],
                 "incident": [_iso(t) for t in execution.incident]},
        store=str(execution.store),
        explained=explain_requests(pipelines, reference, incident, method, truth, requests),
    )
