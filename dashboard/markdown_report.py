"""A :class:`~dashboard.report.Report` as Markdown, for tickets and chat: the same sections
as the HTML report, with tables instead of pictures (no DAG, no plots)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from causal.result import load_note
from dashboard.html_report import verdict
from dashboard.report import (
    HEALTH_HEADER,
    RANKING_HEADER,
    Report,
    column_summary,
    health_rows,
    ranking_rows,
    window_column,
)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.4g}"
    return str("" if value is None else value).replace("|", "\\|").replace("\n", "<br>")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _summary(s: dict[str, Any]) -> str:
    absent = f"absent {s['absent']:.0%}" if s["absent"] is not None else ""
    if "mean" in s:
        return f"mean {_cell(s['mean'])}, {absent}" if s["mean"] is not None else absent
    return ", ".join(f"{k}: {v}" for k, v in s["top"].items()) + f"; {absent}"


def render_markdown(report: Report) -> str:
    ranking, comparison = report.ranking, report.comparison
    out = [f"# flowcause root-cause report: {report.pipeline_name}", "", f"**{verdict(report)}**", ""]
    out += [f"## Ranked candidates ({ranking.method})", "", table(RANKING_HEADER, ranking_rows(ranking)), ""]
    out += ["## Evidence: before and after", ""]
    for e in report.evidence:
        out += [f"### #{e.rank} {e.candidate.step}", "", table(
            ["column", "role", "reference", "incident"],
            [(c, role, _summary(column_summary(window_column(comparison.reference, c))),
              _summary(column_summary(window_column(comparison.incident, c))))
             for role, cols in (("own", e.own), ("parent", e.parents)) for c in cols]), ""]
    out += ["## Step latency and error rate", ""]
    out += [table(HEALTH_HEADER, health_rows(report)) if report.stats
            else "Not available: this data has no per-step timings (reference CSVs).", ""]
    out += ["## Lineage of one request", ""]
    if report.lineage:
        out += [f"Request `{report.request_id}`:", "", table(
            ["pipeline", "node", "status", "time", "latency ms", "inputs", "outputs", "error"],
            [(r["pipeline"], r["node"], r["status"], r["time"], r["latency_ms"], "\n".join(r["inputs"]),
              "\n".join(r["outputs"]), r["error"]) for r in report.lineage]), ""]
    else:
        out += ["Not available.", ""]
    note = load_note(ranking.details)
    out += ["## Method and data", "", f"Method `{ranking.method}`, ranking took {ranking.seconds:.3g} s; "
            f"report created {report.created.isoformat()}." + (f" Step latencies: {note}." if note else ""),
            "", "```json",
            json.dumps(comparison.source, indent=2, default=str), "```", ""]
    return "\n".join(out)
