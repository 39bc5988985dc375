"""Per-step operational numbers from a trace-store frame: throughput, latency, error rate,
for a whole window and per time bin.

A step's *decisions* are the requests for which it recorded a status; it *ran* when that
status is ``ok`` or ``error`` (a skipped branch did not run); its error rate is the share of
its non-skipped decisions that ended in ``error`` or ``timeout``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FAILED = ("error", "timeout")
TIMELINE_BINS = 30
STAT_COLUMNS = ["runs", "errors", "error_rate", "throughput_rps", "latency_p50_ms", "latency_p95_ms"]


def steps_of(frame: pd.DataFrame) -> list[str]:
    """The steps of a trace-store frame, in its column order."""
    return [c[: -len(".status")] for c in frame.columns if c.endswith(".status")]


def _span_seconds(times: pd.Series) -> float:
    if len(times) < 2:
        return 0.0
    return (times.max() - times.min()).total_seconds()


def step_stats(frame: pd.DataFrame, seconds: float | None = None) -> pd.DataFrame:
    """One row per step: ``runs``, ``errors``, ``error_rate``, ``throughput_rps`` (runs per
    second over ``seconds``, by default the window's arrival span; NaN for a window of one
    instant), ``latency_p50_ms`` and ``latency_p95_ms``."""
    if seconds is None:
        seconds = _span_seconds(frame["time"]) if "time" in frame else 0.0
    rows = []
    for step in steps_of(frame):
        status = frame[f"{step}.status"]
        latency = frame[f"{step}.latency_ms"].dropna()
        runs = int(status.isin(("ok", "error")).sum())
        failed = int(status.isin(FAILED).sum())
        attempted = int((status.notna() & (status != "skipped")).sum())
        rows.append({
            "step": step, "runs": runs, "errors": failed,
            "error_rate": failed / attempted if attempted else np.nan,
            "throughput_rps": runs / seconds if seconds > 0 else np.nan,
            "latency_p50_ms": latency.median() if len(latency) else np.nan,
            "latency_p95_ms": latency.quantile(0.95) if len(latency) else np.nan,
        })
    return pd.DataFrame(rows, columns=["step", *STAT_COLUMNS]).set_index("step")


def step_timeline(frame: pd.DataFrame, bins: int = TIMELINE_BINS) -> pd.DataFrame:
    """Long table of :func:`step_stats` per time bin of equal width: columns ``time`` (the
    bin's start), ``step`` and the stats; a step's bins without a decision are left out."""
    columns = ["time", "step", *STAT_COLUMNS]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    times = frame["time"]
    span = _span_seconds(times)
    width = span / bins if span > 0 else 1.0
    which = np.minimum(((times - times.min()).dt.total_seconds() // width).astype(int), bins - 1)
    parts = []
    for b, rows in frame.groupby(which.to_numpy(), sort=True):
        stats = step_stats(rows, seconds=width)
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
