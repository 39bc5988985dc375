"""Small helpers shared by the dashboard's pages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from dashboard.context import frame
from dashboard.report import Report
from dashboard.runs import scenario_run
from dashboard.settings import Settings
from tracing.store import TraceStore

REFRESH_S = 2.0  # how often a page that follows the store re-reads it


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


def following(page: str, body: Callable[..., None], *args: Any) -> None:
    """Shows ``body(*args)``. With the sidebar's "Follow the store" toggle on (or ``?refresh=1``
    in the URL), it re-runs alone every :data:`REFRESH_S` seconds, so a store being written is
    re-read as it grows; off, the page reads the store when it is used or reloaded."""
    on = st.sidebar.toggle("Follow the store", value=st.query_params.get("refresh") in ("1", "true"),
                           key=f"{page}_follow",
                           help=f"re-read the trace store every {REFRESH_S:g} s while it is being written")
    st.fragment(body, run_every=REFRESH_S if on else None)(*args)


def show_verdict(report: Report, text: str) -> None:
    """The verdict in a box that says what kind it is: a warning when the ranking could not
    judge (too few requests), an error for a suspect, a success for no fault."""
    if not report.ranking.judged:
        st.warning(text)
    elif report.suspect is None:
        st.success(text)
    else:
        st.error(text)
