"""The report's and the dashboard's plots, as matplotlib figures.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through pyplot, so
nothing is global: the dashboard's script threads can draw at the same time.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: no display here

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

REFERENCE_COLOUR, INCIDENT_COLOUR = "#3b75af", "#d1495b"
ABSENT = "(absent)"
MAX_CATEGORIES = 12  # a column with at most this many distinct values is drawn as categories
MAX_TITLE = 60  # characters of a plot title; a longer one would widen the figure


def short_title(name: str, width: int = MAX_TITLE) -> str:
    """``name``, cut in the middle to ``width`` characters when longer: both ends stay."""
    if len(name) <= width:
        return name
    head = width // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


def _categories(series: pd.Series) -> pd.Series:
    """Each value as a category label; a missing value (the node did not produce it) is one."""
    def label(v: object) -> str:
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)
    return series.map(lambda v: ABSENT if pd.isna(v) else label(v))


def _category_order(label: str) -> tuple[int, float, str]:
    """Numbers in numeric order, then other values, "absent" last."""
    if label == ABSENT:
        return (2, 0.0, label)
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _shares(series: pd.Series) -> pd.Series:
    counts = _categories(series).value_counts()
    return counts / max(len(series), 1)


def distribution_figure(title: str, reference: pd.Series, incident: pd.Series) -> Figure:
    """Reference against incident distribution of one frame column.

    Few distinct values (router flags, enums, strings) are drawn as the share of requests
    per value, "absent" included; numbers as overlaid histograms of the share of requests
    per bin (shared bins), with the absent shares in the legend.
    """
    fig = Figure(figsize=(5.2, 2.9), layout="constrained")
    ax = fig.add_subplot()
    both = pd.concat([reference, incident])
    numeric = pd.api.types.is_numeric_dtype(both.dtype)
    if not numeric or both.dropna().nunique() <= MAX_CATEGORIES:
        ref, inc = _shares(reference), _shares(incident)
        labels = sorted(set(ref.index) | set(inc.index),
                        key=lambda v: (-(ref.get(v, 0) + inc.get(v, 0)), v))[:MAX_CATEGORIES]
        labels.sort(key=_category_order)
        x = np.arange(len(labels))
        ax.bar(x - 0.2, [ref.get(v, 0) for v in labels], 0.4, label=f"reference (n={len(reference)})",
               color=REFERENCE_COLOUR)
        ax.bar(x + 0.2, [inc.get(v, 0) for v in labels], 0.4, label=f"incident (n={len(incident)})",
               color=INCIDENT_COLOUR)
        ax.set_xticks(x, [v[:14] for v in labels], rotation=20 if len(labels) > 4 else 0)
        ax.set_ylabel("share of requests")
    else:
        values = both.dropna().astype(float)
        low, high = np.nanpercentile(values, [0.5, 99.5]) if len(values) else (0.0, 1.0)
        bins = np.linspace(low, high if high > low else low + 1, 31)
        for series, name, colour in ((reference, "reference", REFERENCE_COLOUR),
                                     (incident, "incident", INCIDENT_COLOUR)):
            present = series.dropna().astype(float).clip(bins[0], bins[-1])
            absent = 1 - len(present) / max(len(series), 1)
            ax.hist(present, bins=bins, weights=np.full(len(present), 1 / max(len(series), 1)),
                    alpha=0.55, color=colour, label=f"{name} (n={len(series)}, absent {absent:.0%})")
        ax.set_ylabel("share of requests")
    ax.set_title(short_title(title), fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, frameon=False)
    return fig


def timeline_figure(timeline: pd.DataFrame, spans: Sequence[tuple[str, pd.Timestamp, pd.Timestamp]] = ()
                    ) -> Figure:
    """Per-step latency (median) and error rate per time bin, from :func:`step_timeline`
    output; ``spans`` shade named time ranges (the reference and incident windows)."""
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    latency_ax, error_ax = fig.subplots(2, 1, sharex=True)
    for step, rows in timeline.groupby("step", sort=False):
        latency_ax.plot(rows["time"], rows["latency_p50_ms"], marker=".", linewidth=1, label=step)
        error_ax.plot(rows["time"], rows["error_rate"], marker=".", linewidth=1, label=step)
    for name, start, end in spans:
        colour = REFERENCE_COLOUR if name == "reference" else INCIDENT_COLOUR
        for ax in (latency_ax, error_ax):
            ax.axvspan(start, end, color=colour, alpha=0.08)
        latency_ax.text(start, 1.0, f" {name}", transform=latency_ax.get_xaxis_transform(),
                        va="top", fontsize=8, color=colour)
    latency_ax.set_ylabel("median latency (ms)")
    error_ax.set_ylabel("error rate")
    error_ax.set_ylim(-0.02, 1.02)
    for ax in (latency_ax, error_ax):
        ax.tick_params(labelsize=8)
    latency_ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def png_data_uri(fig: Figure) -> str:
    """``data:image/png;base64,...`` of the figure: embeds in HTML with nothing to fetch."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
