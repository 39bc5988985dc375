"""Per-step operational numbers from a trace-store frame: throughput, latency, error rate,
for a whole window and per time bin.

A step's *decisions* are the requests for which it recorded a status; it *ran* when that
status is ``ok`` or ``error`` (a skipped branch did not run); its error rate is the share of
its non-skipped decisions that ended in ``error`` or ``timeout``.

A frame holds one decision per request and step: with a loop (``allowCycles``), the last
pass only, so a step that ran three times for a request, then was skipped, would show no
run at all. For such pipelines the numbers come from the store's per-step records, every
pass (:func:`step_records`, passed as ``records``), as ``flowcause traces`` counts them;
for an acyclic pipeline both give the same numbers, and the frame is already read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tracing.store import TraceStore

FAILED = ("error", "timeout")
TIMELINE_BINS = 30
STAT_COLUMNS = ["runs", "errors", "error_rate", "throughput_rps", "latency_p50_ms", "latency_p95_ms"]
RECORD_COLUMNS = ["request_id", "step", "generation", "status", "latency_ms"]


def step_records(store: TraceStore, pipeline: str) -> pd.DataFrame:
    """Every step decision the store holds for ``pipeline``, each pass of a loop its own row
    (columns :data:`RECORD_COLUMNS`), counted as ``flowcause traces`` counts them
    (:meth:`TraceStore.summary`). In a loop a step outside it decides again at each pass,
    under the same generation, so no row is merged with another."""
    nodes = store.step_decisions(
        pipeline, ["request_id", "node", "generation", "status", "latency_ms"])
    return nodes.rename(columns={"node": "step"})[RECORD_COLUMNS].reset_index(drop=True)


def looped(records: pd.DataFrame) -> bool:
    """Whether some step of ``records`` decided more than once for a request: a loop went
    round (a step's later passes have generations above 0)."""
    return bool((records["generation"] > 0).any())


def steps_of(frame: pd.DataFrame) -> list[str]:
    """The steps of a trace-store frame, in its column order."""
    return [c[: -len(".status")] for c in frame.columns if c.endswith(".status")]


def _span_seconds(times: pd.Series) -> float:
    if len(times) < 2:
        return 0.0
    return (times.max() - times.min()).total_seconds()


def _stat_row(step: str, status: pd.Series, latency: pd.Series, seconds: float) -> dict[str, object]:
    latency = latency.dropna()
    runs = int(status.isin(("ok", "error")).sum())
    failed = int(status.isin(FAILED).sum())
    attempted = int((status.notna() & (status != "skipped")).sum())
    return {
        "step": step, "runs": runs, "errors": failed,
        "error_rate": failed / attempted if attempted else np.nan,
        "throughput_rps": runs / seconds if seconds > 0 else np.nan,
        "latency_p50_ms": latency.median() if len(latency) else np.nan,
        "latency_p95_ms": latency.quantile(0.95) if len(latency) else np.nan,
    }


def step_stats(frame: pd.DataFrame, seconds: float | None = None,
               records: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per step: ``runs``, ``errors``, ``error_rate``, ``throughput_rps`` (runs per
    second over ``seconds``, by default the window's arrival span; NaN for a window of one
    instant), ``latency_p50_ms`` and ``latency_p95_ms``.

    Counted from the frame's status and latency columns, or, given ``records`` (of
    :func:`step_records`), from those of the frame's requests: every pass of a loop."""
    if seconds is None:
        seconds = _span_seconds(frame["time"]) if "time" in frame else 0.0
    rows = []
    if records is None:
        for step in steps_of(frame):
            rows.append(_stat_row(step, frame[f"{step}.status"], frame[f"{step}.latency_ms"], seconds))
    else:
        mine = records[records["request_id"].isin(frame.index)]
        groups = dict(iter(mine.groupby("step", sort=False)))
        known = steps_of(frame)
        order = [*(s for s in known if s in groups), *(s for s in groups if s not in known)]
        for step in order:
            rows.append(_stat_row(step, groups[step]["status"], groups[step]["latency_ms"], seconds))
    return pd.DataFrame(rows, columns=["step", *STAT_COLUMNS]).set_index("step")


def step_timeline(frame: pd.DataFrame, bins: int = TIMELINE_BINS,
                  records: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long table of :func:`step_stats` per time bin of equal width: columns ``time`` (the
    bin's start), ``step`` and the stats; a step's bins without a decision are left out.
    A request's decisions (with ``records``: all its passes) fall in the bin of its arrival."""
    columns = ["time", "step", *STAT_COLUMNS]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    times = frame["time"]
    span = _span_seconds(times)
    width = span / bins if span > 0 else 1.0
    which = np.minimum(((times - times.min()).dt.total_seconds() // width).astype(int), bins - 1)
    by_bin: dict[int, pd.DataFrame] = {}
    if records is not None:
        bin_of = pd.Series(which.to_numpy(), index=frame.index)
        mine = records[records["request_id"].isin(frame.index)]
        by_bin = dict(iter(mine.groupby(mine["request_id"].map(bin_of).to_numpy(), sort=False)))
    parts = []
    for b, rows in frame.groupby(which.to_numpy(), sort=True):
        binned = None if records is None else by_bin.get(b, records.iloc[:0])
        stats = step_stats(rows, seconds=width, records=binned)
        stats = stats[stats["runs"] + stats["errors"] > 0]
        parts.append(stats.reset_index().assign(time=times.min() + pd.Timedelta(seconds=b * width)))
    return pd.concat(parts, ignore_index=True)[columns]


def stat_lines(stats: pd.DataFrame) -> dict[str, list[str]]:
    """Short lines per step for a picture: throughput, median latency, error rate."""
    notes = {}
    for step, row in stats.iterrows():
        lines = [f"{int(row['runs'])} runs" + ("" if pd.isna(row["throughput_rps"])
                                          else f", {row['throughput_rps']:.3g}/s")]
        if not pd.isna(row["latency_p50_ms"]):
            lines.append(f"p50 {row['latency_p50_ms']:.3g} ms")
        if not pd.isna(row["error_rate"]):
            lines.append(f"errors {row['error_rate']:.1%}")
        notes[str(step)] = lines
    return notes
