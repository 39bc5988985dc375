"""Machine load on step latencies: what the graph does not see, taken out before judging.

Every step of a pipeline runs on the same machines, so when they get busier or quieter
between two windows, all step latencies move together. Read step by step, such a change
looks like one step being slow. Two corrections tell a slow step from a slow machine:

- the **load factor**: the median over the steps of each step's incident/reference ratio of
  median latency. A fault slows one step (or a few), which the median over three or more
  steps ignores; a load change moves them all. Incident latencies are divided by it before
  they are compared.
- **material change**: a step's latency counts as a finding only when, after that
  correction, a quantile of it (median or 90th percentile) moved by at least
  ``MIN_LATENCY_CHANGE`` times on the scale of the latency buckets (``1 + ms / 1 ms``, so
  sub-millisecond jitter is no change), *and* by at least ``MIN_SPREADS`` times the
  reference's own 10-90 % range on that (log) scale. Load rarely moves steps evenly: a
  CPU-heavy step (a model scoring batches) swings more with it than light ones, and a short
  window has its own drift; a statistically clear change of one step's latency that stays
  within the spread that step normally shows is not yet a slow step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from causal.encoding import LATENCY_RESOLUTION_MS

MIN_STEPS = 3  # fewer steps cannot tell one slow step from a slow machine
MIN_LATENCY_CHANGE = 1.5
MIN_SPREADS = 1.0
QUANTILES = (0.5, 0.9)


def latencies(frame: pd.DataFrame, node: str) -> np.ndarray:
    """A latency column as floats, row for row (NaN where the step did not run or the
    column is missing)."""
    if node not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[node], errors="coerce").to_numpy(dtype=float)


def _latencies(frame: pd.DataFrame, node: str) -> np.ndarray:
    """The latencies of the rows where the step ran."""
    values = latencies(frame, node)
    return values[~np.isnan(values)]


def load_factor(latency_nodes: Sequence[str], reference: pd.DataFrame, incident: pd.DataFrame
                ) -> float:
    """How much slower (> 1) or faster (< 1) the incident's steps ran than the reference's,
    all together; 1.0 when fewer than ``MIN_STEPS`` steps ran in both windows."""
    ratios = []
    for node in latency_nodes:
        ref, inc = _latencies(reference, node), _latencies(incident, node)
        if len(ref) and len(inc) and np.median(ref) > 0 and np.median(inc) > 0:
            ratios.append(float(np.median(inc) / np.median(ref)))
    return float(np.median(ratios)) if len(ratios) >= MIN_STEPS else 1.0


def unloaded(latency_nodes: Sequence[str], incident: pd.DataFrame, factor: float
             ) -> pd.DataFrame:
    """``incident`` with its step latencies divided by ``factor``."""
    if factor == 1.0:
        return incident
    adjusted = incident.copy()
    for node in latency_nodes:
        if node in adjusted:
            adjusted[node] = pd.to_numeric(adjusted[node], errors="coerce") / factor
    return adjusted


@dataclass(frozen=True)
class LatencyChange:
    """How a step's latency moved between two windows, on the bucket scale
    ``log(1 + ms / LATENCY_RESOLUTION_MS)``, at the quantile of ``QUANTILES`` that moved
    most: ``factor`` times (>= 1, either direction), and ``spreads``, that move in units
    of the reference's own 10-90 % range."""

    factor: float = 1.0
    spreads: float = 0.0

    @property
    def material(self) -> bool:
        return self.factor >= MIN_LATENCY_CHANGE and self.spreads >= MIN_SPREADS

    def evidence(self) -> dict[str, float]:
        """The change as a ranking's evidence for the latency node."""
        return {"latency_change": self.factor, "latency_spreads": self.spreads}


def _scale(ms: np.ndarray, q: float | tuple[float, ...]) -> np.ndarray:
    return np.log1p(np.maximum(np.quantile(ms, q), 0.0) / LATENCY_RESOLUTION_MS)


def latency_change(latency_nodes: Sequence[str], reference: pd.DataFrame,
                   incident: pd.DataFrame) -> dict[str, LatencyChange]:
    """Per latency node, its :class:`LatencyChange` (no change when either window has no
    latency for it)."""
    out = {}
    for node in latency_nodes:
        ref, inc = _latencies(reference, node), _latencies(incident, node)
        if not len(ref) or not len(inc):
            out[node] = LatencyChange()
            continue
        moved = float(np.max(np.abs(_scale(inc, QUANTILES) - _scale(ref, QUANTILES))))
        spread = float(_scale(ref, 0.9) - _scale(ref, 0.1))
        spreads = moved / spread if spread > 0 else (np.inf if moved > 0 else 0.0)
        out[node] = LatencyChange(float(np.exp(moved)), spreads)
    return out


def correct_for_load(latency_nodes: Sequence[str], reference: pd.DataFrame,
                     incident: pd.DataFrame
                     ) -> tuple[pd.DataFrame, float, dict[str, LatencyChange]]:
    """``incident`` with its latencies divided by the load factor, that factor, and each
    latency's change against ``reference`` once corrected."""
    factor = load_factor(latency_nodes, reference, incident)
    incident = unloaded(latency_nodes, incident, factor)
    return incident, factor, latency_change(latency_nodes, reference, incident)
