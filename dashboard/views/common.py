"""Small helpers shared by the dashboard's pages."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.context import frame
from dashboard.runs import scenario_run
from dashboard.settings import Settings
from tracing.store import TraceStore


def pipelines_or_stop(settings: Settings) -> list[str]:
    """The store's pipelines; stops the page with a message when there is nothing to show."""
    if not settings.store or not Path(settings.store).is_dir():
        st.warning(f"No trace store at `{settings.store}`: start with `flowcause dashboard --store PATH`.")
        st.stop()
    names = TraceStore(settings.store).pipelines()
    if not names:
        st.info("The trace store holds no pipeline yet.")
        st.stop()
    return names


def default_windows(settings: Settings, pipeline: str, version: int) -> tuple[str, str]:
    """Reference and incident windows to start from: the scenario run's, when a run wrote
    the store, else the first and the second half of the requests recorded."""
    run = scenario_run(settings.store)
    if run is not None and run.target == pipeline:
        return run.window("reference"), run.window("incident")
    n = len(frame(settings.store, pipeline, "..", version))
    return f"first:{n // 2}", f"last:{n - n // 2}"
