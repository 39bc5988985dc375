"""What every dashboard page shares: the pipeline specs, cached reads of the trace store.

Reads are cached per *store version*, the number of committed batches: a store being
written by a running scenario changes version with every batch, and the pages then read
the new data, while an idle store is read once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import stats
from dashboard.data import Comparison, from_store
from dashboard.report import Report, build_report
from dashboard.runs import scenario_run
from dashboard.settings import Settings
from dashboard.windows import parse_window
from engine.spec import Pipeline, SpecError, load_pipelines
from tracing.files import committed
from tracing.store import TraceStore


@st.cache_resource(show_spinner=False)
def specs(files: tuple[str, ...], store: str) -> dict[str, Pipeline]:
    """Pipelines by name: from the spec files, else from the scenario run that wrote the store."""
    pipelines = [p for f in files for p in load_pipelines(Path(f))]
    if not pipelines and store:
        run = scenario_run(store)
        pipelines = run.pipelines() if run else []
    return {p.name: p for p in pipelines}


def settings_specs(settings: Settings) -> dict[str, Pipeline]:
    """The specs; a spec file that cannot be loaded stops the page with its problem (``flowcause
    dashboard`` checks them before it starts; this is for a file changed or removed since)."""
    try:
        return specs(settings.pipeline_files, settings.store)
    except SpecError as exc:
        st.error(f"pipeline spec: {exc.one_line()}")
        st.stop()
        raise  # not reached: st.stop raises


def store_version(store: str) -> int:
    return len(committed(Path(store)))


@st.cache_data(show_spinner=False, max_entries=32)
def frame(store: str, pipeline: str, window: str, version: int) -> pd.DataFrame:
    """The frame of ``window`` (``..`` for everything); ``version`` only keys the cache."""
    return parse_window(window).select(TraceStore(store), pipeline)


@st.cache_data(show_spinner=False, max_entries=8)
def step_records(store: str, pipeline: str, version: int) -> pd.DataFrame:
    """Every step decision of ``pipeline``, each pass of a loop its own
    (:func:`dashboard.stats.step_records`); ``version`` only keys the cache."""
    return stats.step_records(TraceStore(store), pipeline)


def records_for(store: str, pipeline: str, spec: Pipeline | None, version: int) -> pd.DataFrame | None:
    """What :func:`dashboard.stats.step_stats` needs besides the frame: the store's per-step
    records, every pass, for a pipeline that may loop (``allowCycles``) or whose spec is unknown
    and whose records show a loop; None (the frame's own columns) otherwise."""
    if spec is not None and not spec.spec.allow_cycles:
        return None
    records = step_records(store, pipeline, version)
    return records if spec is not None or stats.looped(records) else None


@st.cache_resource(show_spinner=False, max_entries=16)
def report(store: str, target: str, _pipelines: tuple[Pipeline, ...], reference: str, incident: str,
           method: str, request_id: str, version: int) -> Report:
    """The report for these choices, computed once per store version (``request_id`` ""
    lets the report choose). The pipelines are keyed by the ``target`` name."""
    comparison: Comparison = from_store(TraceStore(store), _pipelines, parse_window(reference),
                                        parse_window(incident), target)
    return build_report(comparison, method=method, request_id=request_id or None)


def option(name: str, choices: list[Any], label: str, key: str, sidebar: bool = True) -> Any:
    """A selectbox whose initial choice may come from the URL (``?name=value``)."""
    wanted = st.query_params.get(name)
    index = choices.index(wanted) if wanted in choices else 0
    where = st.sidebar if sidebar else st
    return where.selectbox(label, choices, index=index, key=key)
