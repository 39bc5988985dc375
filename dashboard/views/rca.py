"""The root-cause page: choose two windows and a method, see the ranking and its evidence.

Everything shown comes from :func:`dashboard.report.build_report`, the function behind the
offline report, so the page and a report on the same choices agree.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from dashboard import context
from dashboard.context import frame, option, settings_specs, store_version
from dashboard.dag import dag_svg, step_graph
from dashboard.data import chained_with, cyclic_problem, too_few
from dashboard.html_report import render_html, verdict
from dashboard.plots import MAX_TITLE, distribution_figure, timeline_figure
from dashboard.report import (
    HEALTH_HEADER,
    RANKING_HEADER,
    Report,
    graph_ranks,
    health_rows,
    ranking_rows,
    shift_methods,
    window_column,
    window_spans,
)
from dashboard.settings import Settings
from dashboard.stats import stat_lines
from dashboard.views.common import default_windows, pipelines_or_stop, show_verdict
from dashboard.windows import WindowError, parse_window


def ranking_table(report: Report) -> pd.DataFrame:
    return pd.DataFrame(ranking_rows(report.ranking), columns=RANKING_HEADER)


def lineage_link(pipeline: str, request_id: str) -> str:
    """A Markdown link to the trace explorer on the request, whatever characters its id holds:
    the query is URL-encoded, the text's punctuation escaped."""
    query = urlencode({"page": "traces", "pipeline": pipeline, "request": request_id})
    text = re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", request_id)
    return f"[{text}](?{query})"


def _evidence(report: Report) -> None:
    ref, inc = report.comparison.reference, report.comparison.incident
    for e in report.evidence:
        st.markdown(f"**#{e.rank} {e.candidate.step}**: its outputs, then its parents'")
        columns = e.own + e.parents
        for start in range(0, len(columns), 3):
            for col, name in zip(st.columns(3), columns[start:start + 3], strict=False):
                col.pyplot(distribution_figure(name, window_column(ref, name), window_column(inc, name)))
                if len(name) > MAX_TITLE:  # the plot's title is shortened
                    col.caption(name)


def render(settings: Settings) -> None:
    st.title("Root cause")
    held = pipelines_or_stop(settings)
    pipeline = option("pipeline", held, "Pipeline", "rca_pipeline")
    known = settings_specs(settings)
    if pipeline not in known:
        st.warning(f"No spec for pipeline `{pipeline}`: start the dashboard with `--pipeline FILE.yaml`.")
        st.stop()
    # the pipelines the ranking takes (data.from_store): those of the specs the store holds
    # that are chained with this one
    loops = cyclic_problem(chained_with([p for name, p in known.items() if name in held],
                                        pipeline))
    if loops:
        st.error(loops)
        st.stop()
    version = store_version(settings.store)
    ref_default, inc_default = default_windows(settings, pipeline, version)
    # keyed, seeded once: the defaults move as the store grows, the windows typed stay
    st.session_state.setdefault("rca_reference", st.query_params.get("reference", ref_default))
    st.session_state.setdefault("rca_incident", st.query_params.get("incident", inc_default))
    left, middle, right = st.columns(3)
    reference = left.text_input("Reference window", key="rca_reference",
                                help="T0..T1 (ISO or epoch seconds), first:N, last:N or requests:A..B "
                                "(requests by arrival, from 0)")
    incident = middle.text_input("Incident window", key="rca_incident")
    with right:
        method = option("method", shift_methods(), "Method", "rca_method", sidebar=False)
    try:
        parse_window(reference), parse_window(incident)
    except WindowError as exc:
        st.error(str(exc))
        st.stop()
    for name, window in (("reference", reference), ("incident", incident)):
        problem = too_few(name, len(frame(settings.store, pipeline, window, version)))
        if problem:
            st.error(problem)
            st.stop()
    with st.spinner("Localising…"):
        try:
            report = context.report(settings.store, pipeline, tuple(known.values()), reference,
                                    incident, method, "", version)
        except ValueError as exc:  # causal.WindowError, e.g. text where the other window has
            # numbers; or a graph the ranking refuses (a cycle the spec check above missed)
            st.error(str(exc))
            st.stop()
    source = report.comparison.source
    st.caption(f"reference: {source['reference']['requests']} requests, incident: "
               f"{source['incident']['requests']} requests; ranking took {report.ranking.seconds:.2f} s")
    show_verdict(report, verdict(report))
    notes = stat_lines(report.stats["incident"]) if report.stats else {}
    for spec in report.comparison.pipelines:
        st.image(dag_svg(step_graph(spec), notes=notes, ranks=graph_ranks(report, spec)), caption=spec.name)
    st.subheader("Ranked candidates")
    st.dataframe(ranking_table(report), hide_index=True)
    st.subheader("Evidence: reference (blue) against incident (red)")
    _evidence(report)
    st.subheader("Step latency and error rate")
    st.dataframe(pd.DataFrame(health_rows(report), columns=HEALTH_HEADER), hide_index=True)
    if report.timeline is not None and len(report.timeline):
        st.pyplot(timeline_figure(report.timeline, window_spans(report)))
    if report.request_id:
        st.markdown(f"Lineage of an incident request: {lineage_link(pipeline, report.request_id)}")
    if st.button("Build the HTML report"):
        st.download_button("Download report.html", render_html(report), file_name="report.html",
                           mime="text/html")
