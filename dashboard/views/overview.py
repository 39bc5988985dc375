"""The pipeline page: the DAG with per-step throughput, latency and error rate."""

from __future__ import annotations

import streamlit as st

from dashboard.context import frame, option, records_for, settings_specs, store_version
from dashboard.dag import dag_svg, step_graph
from dashboard.settings import Settings
from dashboard.stats import stat_lines, step_stats
from dashboard.views.common import following, pipelines_or_stop


def render(settings: Settings) -> None:
    st.title("Pipeline")
    pipeline = option("pipeline", pipelines_or_stop(settings), "Pipeline", "overview_pipeline")
    following("overview", _body, settings, pipeline)


def _body(settings: Settings, pipeline: str) -> None:
    version = store_version(settings.store)
    data = frame(settings.store, pipeline, "..", version)
    if data.empty:
        st.info("No requests recorded yet.")
        return
    spec = settings_specs(settings).get(pipeline)
    # a loop's passes are counted from the store's records, not the frame's last pass
    stats = step_stats(data, records=records_for(settings.store, pipeline, spec, version))
    cols = st.columns(3)
    cols[0].metric("requests", len(data))
    cols[1].metric("first arrival", f"{data['time'].min():%Y-%m-%d %H:%M:%S}")
    cols[2].metric("last arrival", f"{data['time'].max():%Y-%m-%d %H:%M:%S}")
    if spec is None:
        st.info("Start the dashboard with `--pipeline FILE.yaml` to see the pipeline graph.")
    else:
        st.image(dag_svg(step_graph(spec), notes=stat_lines(stats)))
    st.subheader("Steps (all recorded requests)")
    st.dataframe(stats)
