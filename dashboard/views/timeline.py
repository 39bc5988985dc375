"""Steps over time: throughput, latency and error rate of each step, per time bin."""

from __future__ import annotations

import streamlit as st

from dashboard.context import frame, option, records_for, settings_specs, store_version
from dashboard.settings import Settings
from dashboard.stats import step_timeline, steps_of
from dashboard.views.common import following, pipelines_or_stop

CHARTS = {"throughput_rps": "runs per second", "latency_p50_ms": "median latency (ms)",
          "latency_p95_ms": "p95 latency (ms)", "error_rate": "error rate"}


def render(settings: Settings) -> None:
    st.title("Steps over time")
    pipeline = option("pipeline", pipelines_or_stop(settings), "Pipeline", "steps_pipeline")
    following("steps", _body, settings, pipeline)


def _body(settings: Settings, pipeline: str) -> None:
    version = store_version(settings.store)
    data = frame(settings.store, pipeline, "..", version)
    if data.empty:
        st.info("No requests recorded yet.")
        return
    steps = st.multiselect("Steps", steps_of(data), default=steps_of(data))
    bins = st.slider("Time bins", 5, 120, 30)
    records = records_for(settings.store, pipeline, settings_specs(settings).get(pipeline), version)
    timeline = step_timeline(data, bins=bins, records=records)
    timeline = timeline[timeline["step"].isin(steps)]
    for column, title in CHARTS.items():
        st.subheader(title)
        st.line_chart(timeline.pivot(index="time", columns="step", values=column))
