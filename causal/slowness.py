"""How slow one request's step was, against that step's latencies in the reference.

A step's latency is a node like any other, coded as a bucket number
(:func:`causal.encoding.latency_bucket`), and when it shows few distinct buckets its
mechanism judges it as a category: a bucket the reference never showed is then merely
rare, its surprise bounded by the reference's size, however far beyond the reference it
lies. Two windows still tell such a step apart (many requests move together), one request
does not. So in the anomaly mode a latency also gets an *ordinal* score, how far above the
reference's median its bucket lies in units of the reference's own spread, read as a normal
upper tail::

    z = (bucket - median) / max(spread / 2.563, 1),   surprise = -log10 P(Z >= z)

``spread`` is the reference's 10-90 % range in buckets (2.563 standard deviations of a
normal distribution); a spread below one bucket (10 %) counts as one bucket, so timing
jitter is no finding. Only slowness scores: a step that ran faster than usual broke nothing.
A step that did not run (no latency) scores 0: its absence is judged by the other nodes.

One request is one draw, and latencies have heavy tails: a pause of the machine makes a
single execution of some step several times slower now and then, which a window shows as
noise but a single request cannot tell from a slow step. So for one request a latency is
only a finding when it also lies at least ``MIN_REQUEST_SPREADS`` times the step's usual
10-90 % range above its median (:class:`causal.load.LatencyChange` ``spreads``), on top of
the material change that windows need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from causal.encoding import latency_bucket
from causal.mechanisms import MAX_SURPRISE

NORMAL_10_90 = float(norm.ppf(0.9) - norm.ppf(0.1))  # 2.563 standard deviations
MIN_SCALE_BUCKETS = 1.0
MIN_REQUEST_SPREADS = 3.0


@dataclass(frozen=True)
class Slowness:
    """A step's reference latencies summarised on the bucket scale: median and scale."""

    median: float
    scale: float

    @classmethod
    def of(cls, ms: np.ndarray) -> Slowness:
        buckets = latency_bucket(ms[~np.isnan(ms)])
        if not len(buckets):
            return cls(np.nan, MIN_SCALE_BUCKETS)
        low, median, high = np.quantile(buckets, (0.1, 0.5, 0.9))
        return cls(float(median), max(float(high - low) / NORMAL_10_90, MIN_SCALE_BUCKETS))

    def surprise(self, ms: np.ndarray) -> np.ndarray:
        """Per latency in ``ms``: -log10 of the upper tail probability (see the module
        docstring), at most ``MAX_SURPRISE``; 0 for NaN (the step did not run) and when the
        reference never saw the step run."""
        if np.isnan(self.median):
            return np.zeros(len(ms))
        z = (latency_bucket(np.nan_to_num(ms, nan=0.0)) - self.median) / self.scale
        surprise = np.minimum(-norm.logsf(z) / np.log(10.0), MAX_SURPRISE)
        return np.where(np.isnan(ms), 0.0, surprise)


def cross_fitted(ms: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Each reference latency's surprise against the *other* part of the reference
    (``first`` marks one part), as the mechanisms score reference rows held out."""
    out = np.empty(len(ms))
    for part in (first, ~first):
        out[part] = Slowness.of(ms[~part]).surprise(ms[part])
    return out
