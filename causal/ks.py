"""Two-sample Kolmogorov-Smirnov distances, many at once (bootstrap and null resamples).

Scores are *standardised*: lambda = D * sqrt(n m / (n + m)), which under "no change" follows
the same (Kolmogorov) law whatever the two sample sizes, so nodes assessed on different
numbers of requests stay comparable.
"""

from __future__ import annotations

import numpy as np
from scipy.special import kolmogi, kolmogorov


def distances(a: np.ndarray, b: np.ndarray, wa: np.ndarray, wb: np.ndarray,
              tail: float | None = None) -> np.ndarray:
    """KS distance between the weighted samples ``a`` and ``b``, one per row of the weight
    matrices ``wa`` (R x len(a)) and ``wb`` (R x len(b)); ties are handled exactly.

    With ``tail``, the gap at each point is divided by 2 sqrt(max(H (1 - H), tail)), H the
    pooled distribution function: unchanged in the middle, up to 1 / (2 sqrt(tail)) times
    larger in the tails, where a few requests all landing in a place the other window
    (almost) never reaches are strong evidence that plain KS underrates.
    """
    pooled = np.concatenate([a, b])
    order = np.argsort(pooled, kind="stable")
    ends = np.append(pooled[order][1:] != pooled[order][:-1], True)
    na, nb = wa.shape[1], wb.shape[1]
    ta = np.maximum(wa.sum(1, keepdims=True), 1e-300)
    tb = np.maximum(wb.sum(1, keepdims=True), 1e-300)
    ca = np.cumsum(np.hstack([wa, np.zeros((len(wa), nb))])[:, order], axis=1)[:, ends]
    cb = np.cumsum(np.hstack([np.zeros((len(wb), na)), wb])[:, order], axis=1)[:, ends]
    gap = np.abs(ca / ta - cb / tb)
    if tail is not None:
        h = (ca + cb) / (ta + tb)
        gap /= 2 * np.sqrt(np.maximum(h * (1 - h), tail))
    return gap.max(axis=1) if gap.size else np.zeros(len(wa))


def split_distances(u: np.ndarray, wa: np.ndarray, wb: np.ndarray, tail: float | None = None
                    ) -> np.ndarray:
    """:func:`distances` between two weightings of one sample ``u`` (``distances(u, u, wa,
    wb, tail)``, the null's halves), sorting and summing over ``u`` once instead of twice."""
    order = np.argsort(u, kind="stable")
    ends = np.append(u[order][1:] != u[order][:-1], True)
    ta = np.maximum(wa.sum(1, keepdims=True), 1e-300)
    tb = np.maximum(wb.sum(1, keepdims=True), 1e-300)
    ca = np.cumsum(wa[:, order], axis=1)[:, ends]
    cb = np.cumsum(wb[:, order], axis=1)[:, ends]
    gap = np.abs(ca / ta - cb / tb)
    if tail is not None:
        h = (ca + cb) / (ta + tb)
        gap /= 2 * np.sqrt(np.maximum(h * (1 - h), tail))
    return gap.max(axis=1) if gap.size else np.zeros(len(wa))


def distance(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 or len(b) == 0:
        return 0.0
    return float(distances(a, b, np.ones((1, len(a))), np.ones((1, len(b))))[0])


def standardised(d: np.ndarray | float, n: int, m: int) -> np.ndarray | float:
    return d * np.sqrt(n * m / (n + m)) if n and m else d * 0.0


def p_value(lam: float) -> float:
    """Asymptotic p-value of a standardised KS score (conservative when there are ties)."""
    return float(kolmogorov(lam))


def critical(alpha: float) -> float:
    """The standardised score a single comparison exceeds with probability ``alpha``."""
    return float(kolmogi(alpha))
