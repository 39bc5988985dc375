"""A :class:`~dashboard.report.Report` as one self-contained HTML file.

Everything is inline: CSS in a ``<style>`` element, the DAG as inline SVG, the plots as
``data:`` PNG images. The page refers to no URL at all, so it opens offline, attached to a
ticket, years later.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

import pandas as pd

from causal.result import load_note
from dashboard.dag import dag_svg, step_graph
from dashboard.plots import distribution_figure, png_data_uri, timeline_figure
from dashboard.report import (
    HEALTH_HEADER,
    RANKING_HEADER,
    Report,
    confidence_text,
    graph_ranks,
    health_rows,
    ranking_rows,
    report_json,
    window_column,
    window_spans,
)
from dashboard.stats import stat_lines

STYLE = """
body{font-family:sans-serif;margin:24px auto;max-width:1200px;color:#222;line-height:1.4}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:15px}h4{font-size:13px;margin:10px 0 4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-size:16px;padding:10px 14px;border-radius:6px;background:#fde0dd;border:1px solid #c62828}
.verdict.ok{background:#e8f5e9;border-color:#2e7d32}.plots{display:flex;flex-wrap:wrap;gap:8px}
.plots figure{margin:0}.plots img{width:480px}figcaption{font-size:12px;color:#555}
.dag{overflow-x:auto}code,pre{font-size:12px}pre{background:#f7f7f7;padding:8px;overflow-x:auto}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{"" if pd.isna(value) else f"{value:.4g}"}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{escape('' if value is None else str(value))}</td>"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def verdict(report: Report) -> str:
    top = report.ranking.top
    if not report.ranking.judged:  # neither a fault nor "no fault": too few requests
        return f"Not enough data to judge: {report.ranking.details.get('not_judged', '')}"
    if top is None:
        return "No fault found, and no candidates."
    confidence = "" if top.confidence is None else f", confidence {confidence_text(top.confidence)}"
    best = f"{top.step} (top candidate {top.node}, score {top.score:.3g}{confidence})"
    if report.suspect is None:
        return (f"No fault found: nothing departs beyond {report.ranking.method}'s threshold. "
                f"Highest ranked: {best}")
    return f"Suspected step: {best}"


def _figure(title: str, report: Report, column: str) -> str:
    fig = distribution_figure(column, window_column(report.comparison.reference, column),
                              window_column(report.comparison.incident, column))
    return (f'<figure><img alt="{escape(column)}" src="{png_data_uri(fig)}">'
            f"<figcaption>{escape(title)}</figcaption></figure>")


def _evidence_section(report: Report) -> str:
    parts = ["<h2>Evidence: before and after</h2>",
             "<p>For each top candidate, the distribution of its outputs and of what its parents "
             "fed it, in the reference window (blue) and the incident window (red).</p>"]
    if not report.evidence:
        parts.append("<p>No candidates.</p>")
    for e in report.evidence:
        parts.append(f"<h3>#{e.rank} {escape(e.candidate.step)}</h3>")
        for title, columns in (("The step's own nodes", e.own), ("What it consumes", e.parents)):
            if columns:
                parts.append(f"<h4>{title}</h4>" + '<div class="plots">' + "".join(
                    _figure(c, report, c) for c in columns) + "</div>")
    return "".join(parts)


def _health_section(report: Report) -> str:
    parts = ["<h2>Step latency and error rate</h2>"]
    if not report.stats:
        return parts[0] + "<p>Not available: this data has no per-step timings (reference CSVs).</p>"
    parts.append(table(HEALTH_HEADER, health_rows(report)))
    if report.timeline is not None and len(report.timeline):
        fig = timeline_figure(report.timeline, window_spans(report))
        parts.append(f'<img alt="latency and error rate over time" src="{png_data_uri(fig)}">')
    return "".join(parts)


def _lineage_section(report: Report) -> str:
    head = "<h2>Lineage of one request</h2>"
    if not report.request_id:
        return head + "<p>Not available: lineage needs a trace store.</p>"
    if not report.lineage:
        return head + f"<p>No records for request <code>{escape(report.request_id)}</code>.</p>"
    rows = [(r["pipeline"], r["node"], r["status"], r["time"], r["latency_ms"],
             "\n".join(r["inputs"]), "\n".join(r["outputs"]), r["error"] or "")
            for r in report.lineage]
    return (head + f"<p>Request <code>{escape(report.request_id)}</code>, "
            f"trace <code>{escape(str(report.lineage[0]['trace_id']))}</code>, every node in the "
            "order it decided.</p>"
            + table(["pipeline", "node", "status", "time", "latency ms", "inputs", "outputs", "error"],
                    rows).replace("\n", "<br>"))


def _method_section(report: Report) -> str:
    ranking = report.ranking
    source = report.comparison.source
    note = load_note(ranking.details)
    return ("<h2>Method and data</h2>"
            + table(["", "value"], [("method", f"{ranking.method} ({ranking.mode})"),
                               ("fault threshold", ranking.threshold),
                               ("verdict", "no fault" if ranking.no_fault else "fault"),
                               *([("step latencies", note)] if note else []),
                               ("ranking took (s)", float(ranking.seconds)),
                               ("pipelines", ", ".join(p.name for p in report.comparison.pipelines)),
                               ("report created", report.created.isoformat())])
            + "<h3>Data</h3><pre>" + escape(json.dumps(source, indent=2, default=str)) + "</pre>")


def render_html(report: Report) -> str:
    ranking = report.ranking
    ok = " ok" if report.suspect is None else ""
    candidates = table(RANKING_HEADER, ranking_rows(ranking))
    notes = stat_lines(report.stats["incident"]) if report.stats else {}
    dags = "".join(
        (f"<h3>{escape(p.name)}</h3>" if len(report.comparison.pipelines) > 1 else "")
        + f'<div class="dag">{dag_svg(step_graph(p), notes=notes, ranks=graph_ranks(report, p))}</div>'
        for p in report.comparison.pipelines)
    title = f"flowcause root-cause report: {report.pipeline_name}"
    return "".join([
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="verdict{ok}" id="verdict">{escape(verdict(report))}</p>',
        "<h2>Pipeline</h2><p>Suspected steps are numbered by rank; the first is in red. "
        "Dashed edges are triggers.</p>",
        dags,
        f"<h2>Ranked candidates ({escape(ranking.method)})</h2>", candidates,
        _evidence_section(report), _health_section(report), _lineage_section(report),
        _method_section(report),
        '<script type="application/json" id="report-data">',
        json.dumps(report_json(report), default=str).replace("</", "<\\/"),
        "</script></body></html>",
    ])
