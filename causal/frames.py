"""Windows of traffic as frames: CSV files (globs allowed) or trace-store windows.

``store:PATH@T0..T1`` reads requests that arrived in ``[T0, T1)`` from the trace store at
PATH (either end may be left out: ``store:PATH@T0..``, ``store:PATH``); with several
pipelines (chained), their frames are joined on the request id. Anything else is a path or
glob of CSV files, concatenated in name order.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

STORE_PREFIX = "store:"


def read_window(source: str, pipelines: Sequence[str],
                layout: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The frame ``source`` names, in ``layout`` when given (store windows only; CSV files
    are taken to be in it already)."""
    if source.startswith(STORE_PREFIX):
        return _store_window(source[len(STORE_PREFIX):], pipelines, layout)
    files = sorted(glob.glob(source)) or ([source] if Path(source).exists() else [])
    if not files:
        raise FileNotFoundError(f"no CSV file matches {source!r}")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def _store_window(spec: str, pipelines: Sequence[str],
                  layout: Mapping[str, str] | None) -> pd.DataFrame:
    from tracing.store import TraceStore  # the trace store is optional for CSV users

    path, _, window = spec.partition("@")
    start, _, end = window.partition("..")
    store = TraceStore(path)
    frames = [store.frame(p, start or None, end or None) for p in pipelines]
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.join(other.drop(columns=[c for c in other if c in frame]), how="outer")
    if layout is None:
        return frame
    from tracing.layout import to_layout

    return to_layout(frame, layout)
