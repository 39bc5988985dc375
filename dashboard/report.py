"""A root-cause report: the ranking of the causal module on two sets of requests, with what
a person needs to check it (evidence columns, step health, one request's lineage).

:func:`build_report` gathers everything; :mod:`dashboard.html_report` and
:mod:`dashboard.markdown_report` render it and :func:`report_json` turns it into JSON. The
dashboard builds the same :class:`Report` and draws its parts, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

import causal
from causal.graph import CausalGraph
from dashboard.dag import INPUTS, OUTPUTS
from dashboard.data import Comparison
from dashboard.lineage import lineage
from dashboard.stats import step_stats, step_timeline
from engine.spec import Pipeline

TOP_CANDIDATES = 3
MAX_PLOTS = 8  # per candidate, for its own nodes and again for its parents
HIDDEN_SUFFIXES = (".std", ".min", ".max", ".l2", ".hash")


@dataclass
class Evidence:
    """The columns to compare, before against after, for one suspected node."""

    rank: int
    candidate: Any  # causal.Candidate
    own: list[str]
    parents: list[str]


@dataclass
class Report:
    comparison: Comparison
    ranking: Any  # causal.Ranking
    evidence: list[Evidence]
    stats: dict[str, pd.DataFrame] = field(default_factory=dict)  # window -> step_stats
    timeline: pd.DataFrame | None = None
    request_id: str | None = None
    lineage: list[dict[str, Any]] = field(default_factory=list)
    created: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))

    @property
    def pipeline_name(self) -> str:
        return self.comparison.target

    @property
    def suspects(self) -> dict[str, int]:
        """Suspect -> rank (1 first) for the distinct steps of the top candidates, named as
        the causal module names a candidate's step: a step, a pipeline's name for its inputs,
        ``<pipeline>.outputs`` for its outputs. Ranked even when the method found no fault."""
        ranks: dict[str, int] = {}
        for candidate in self.ranking.candidates:
            ranks.setdefault(candidate.step, len(ranks) + 1)
        return {name: rank for name, rank in ranks.items() if rank <= TOP_CANDIDATES}

    @property
    def suspect(self) -> str | None:
        """The prime suspect, or None when the method found no fault."""
        return None if self.ranking.no_fault else next(iter(self.suspects), None)


def shift_methods() -> list[str]:
    """The ranking methods that compare two windows, as a report does (``causal.METHODS``
    holds also methods that only explain single requests)."""
    return [name for name, method in causal.METHODS.items() if "shift" in method.modes]


def graph_ranks(report: Report, pipeline: Pipeline) -> dict[str, int]:
    """The report's suspects as nodes of ``pipeline``'s step graph (``dashboard.dag``)."""
    nodes = {s.name: s.name for s in pipeline.steps}
    nodes.update({pipeline.name: INPUTS, f"{pipeline.name}.{OUTPUTS}": OUTPUTS})
    return {nodes[name]: rank for name, rank in report.suspects.items() if name in nodes}


def shown(columns: Iterable[str]) -> list[str]:
    """The columns worth a plot: of a vector tensor's statistics only the mean and the NaN
    count (the others rarely add to the picture and would multiply the plots), and no hashes."""
    return [c for c in columns if not c.endswith(HIDDEN_SUFFIXES)]


def _evidence(graph: CausalGraph, rank: int, candidate: Any) -> Evidence:
    """The candidate's node and the other nodes of its step, then their parents in the
    causal graph (what the step consumes), in the graph's topological order."""
    own = [candidate.node] if candidate.node in graph.info else []
    own += [n for n in graph.nodes if graph.step(n) == candidate.step and n not in own]
    parents = [p for p in graph.nodes if p not in own and any(p in graph.parents[n] for n in own)]
    return Evidence(rank, candidate, shown(own)[:MAX_PLOTS], shown(parents)[:MAX_PLOTS])


def _lineage_request(comparison: Comparison, step: str | None) -> str | None:
    """The first incident request in which ``step`` ran, else the first incident request."""
    incident = comparison.incident
    if incident.empty:
        return None
    ran = f"{step}.ran"
    if step and ran in incident and (incident[ran] == 1.0).any():
        return str(incident.index[(incident[ran] == 1.0).to_numpy()][0])
    return str(incident.index[0])


def _timeline(comparison: Comparison) -> pd.DataFrame | None:
    """Step stats over time from the first reference to the last incident arrival (anything
    between the two windows included), for the target pipeline."""
    frames = [f for f in (comparison.reference, comparison.incident) if len(f)]
    if comparison.store is None or not frames:
        return None
    start = min(f["time"].min() for f in frames)
    end = max(f["time"].max() for f in frames) + pd.Timedelta(1, "ns")
    return step_timeline(comparison.store.frame(comparison.target, start, end))


def build_report(comparison: Comparison, *, method: str = "flowcause", ranking: Any = None,
                 request_id: str | None = None, top: int = TOP_CANDIDATES, **options: Any) -> Report:
    """Rank with ``causal.localise`` (unless ``ranking`` is given, as the dashboard does with
    its cached one) and gather the report around it. ``request_id`` picks the request whose
    lineage is shown (store data only; default: see :func:`_lineage_request`)."""
    if ranking is None:
        ranking = causal.localise(comparison.pipelines, comparison.reference, comparison.incident,
                                  method=method, layout=comparison.layout, **options)
    graph = causal.graph_for(comparison.pipelines, comparison.reference, comparison.incident,
                             layout=comparison.layout)
    evidence = [_evidence(graph, rank, c) for rank, c in enumerate(ranking.candidates[:top], 1)]
    report = Report(comparison, ranking, evidence)
    if comparison.store is not None:
        report.stats = {"reference": step_stats(comparison.reference),
                        "incident": step_stats(comparison.incident)}
        report.timeline = _timeline(comparison)
        report.request_id = request_id or _lineage_request(comparison, next(iter(report.suspects), None))
        if report.request_id:
            report.lineage = lineage(comparison.store, report.request_id)
    return report


RANKING_HEADER = ["rank", "step", "node", "score", "confidence", "evidence"]


def evidence_text(evidence: Mapping[str, Any]) -> str:
    """The method's scalar evidence numbers, briefly (nested details are left to the JSON)."""
    return "; ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}"
                     for k, v in evidence.items() if not isinstance(v, Mapping | list))


def confidence_text(confidence: float | None) -> str:
    return "" if confidence is None else f"{confidence:.0%}"


def ranking_rows(ranking: Any) -> list[tuple[Any, ...]]:
    """The ranking as rows under :data:`RANKING_HEADER` (confidence as a percentage text)."""
    return [(i, c.step, c.node, float(c.score), confidence_text(c.confidence), evidence_text(c.evidence))
            for i, c in enumerate(ranking.candidates, 1)]


HEALTH_HEADER = ["step", "runs (ref)", "runs (inc)", "p50 ms (ref)", "p50 ms (inc)",
                 "error rate (ref)", "error rate (inc)"]


def health_rows(report: Report) -> list[tuple[Any, ...]]:
    """Per step, reference against incident: runs, median latency, error rate."""
    if not report.stats:
        return []
    ref, inc = report.stats["reference"], report.stats["incident"]
    steps = list(dict.fromkeys([*ref.index, *inc.index]))

    def get(stats: pd.DataFrame, step: str, column: str) -> Any:
        return stats.at[step, column] if step in stats.index else None
    return [(step, *(get(s, step, c) for c in ("runs", "latency_p50_ms", "error_rate") for s in (ref, inc)))
            for step in steps]


def window_column(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column of a window's frame; all missing when no request of the window produced it
    (a router branch never taken leaves no column)."""
    return frame[column] if column in frame else pd.Series(np.nan, index=frame.index, name=column)


def window_spans(report: Report) -> list[tuple[str, pd.Timestamp, pd.Timestamp]]:
    """(name, first arrival, last arrival) of the reference and incident windows that have
    requests and times, to shade on a timeline."""
    frames = {"reference": report.comparison.reference, "incident": report.comparison.incident}
    return [(name, f["time"].min(), f["time"].max()) for name, f in frames.items()
            if len(f) and "time" in f]


def column_summary(series: pd.Series) -> dict[str, Any]:
    """Count, share absent and (numbers) mean/std or (strings) the most common values."""
    present = series.dropna()
    out: dict[str, Any] = {"n": int(len(series)),
                           "absent": float(1 - len(present) / len(series)) if len(series) else None}
    if pd.api.types.is_numeric_dtype(series.dtype):
        out["mean"] = float(present.mean()) if len(present) else None
        out["std"] = float(present.std()) if len(present) > 1 else None
    else:
        out["top"] = {str(k): int(v) for k, v in present.value_counts().head(5).items()}
    return out


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    clean = frame.replace({np.nan: None})
    return [{k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in r.items()}
            for r in clean.to_dict("records")]


def report_json(report: Report) -> dict[str, Any]:
    """Everything in the report as JSON-ready data (the plots as the numbers behind them)."""
    ref, inc = report.comparison.reference, report.comparison.incident
    return {
        "pipeline": report.pipeline_name,
        "created": report.created.isoformat(),
        "suspects": report.suspects,
        "data": report.comparison.source,
        "ranking": report.ranking.to_dict(),
        "evidence": [{
            "rank": e.rank, "node": e.candidate.node, "step": e.candidate.step,
            "columns": [{"column": c, "role": role, "reference": column_summary(window_column(ref, c)),
                         "incident": column_summary(window_column(inc, c))}
                        for role, cols in (("own", e.own), ("parent", e.parents)) for c in cols],
        } for e in report.evidence],
        "steps": {name: _records(stats.reset_index()) for name, stats in report.stats.items()},
        "timeline": _records(report.timeline) if report.timeline is not None else None,
        "lineage": {"request_id": report.request_id, "nodes": report.lineage}
        if report.request_id else None,
    }
