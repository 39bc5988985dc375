"""The trace explorer: find a request, see every node it passed, its tensors and timings."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.context import frame, option, settings_specs, store_version
from dashboard.dag import dag_svg, step_graph
from dashboard.lineage import lineage, node_notes
from dashboard.settings import Settings
from dashboard.views.common import pipelines_or_stop
from tracing.store import TraceStore

RECENT = 200


def render(settings: Settings) -> None:
    st.title("Trace explorer")
    pipeline = option("pipeline", pipelines_or_stop(settings), "Pipeline", "traces_pipeline")
    data = frame(settings.store, pipeline, "..", store_version(settings.store))
    typed = st.text_input("Request id", value=st.query_params.get("request", ""),
                          placeholder="search by request id")
    recent = [str(r) for r in data.index[-RECENT:][::-1]]
    request_id = typed.strip() or st.selectbox(f"…or one of the latest {len(recent)} requests", recent,
                                               key="traces_recent")  # keyed: kept as the store grows
    if not request_id:
        st.info("No requests recorded yet.")
        return
    rows = lineage(TraceStore(settings.store), request_id)
    if not rows:
        st.warning(f"No records for request `{request_id}`.")
        return
    st.caption(f"request `{request_id}`, trace `{rows[0]['trace_id']}`")
    spec = settings_specs(settings).get(pipeline)
    if spec is not None:
        st.image(dag_svg(step_graph(spec), notes=node_notes(rows, pipeline)))
    table = pd.DataFrame(rows)
    st.dataframe(table[["pipeline", "node", "status", "time", "latency_ms", "batch_size", "error"]],
                 hide_index=True)
    st.subheader("Tensors")
    tensors = [{"node": r["node"], "port": port, "tensor": t}
               for r in rows for port in ("inputs", "outputs") for t in r[port]]
    st.dataframe(pd.DataFrame(tensors, columns=["node", "port", "tensor"]), hide_index=True)
    with st.expander("Record ids and parents"):
        st.dataframe(table[["node", "record_id", "parents"]], hide_index=True)
