"""Comparing one channel of one node between the reference and the incident window, and
the two resampling schemes around it: the no-fault threshold and bootstrap confidence.

A comparison takes the cross-fitted PITs of the node's channel (:mod:`causal.crossfit`),
keeps the incident requests whose parents lie in the reference support, and reweights the
reference requests to the incident's mix of contexts, so that a shift of the parents does
not read as a change of the node. Its score is the standardised KS distance weighted
towards the tails (:func:`causal.ks.distances`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causal import ks
from causal.crossfit import Split
from causal.mechanisms import Channel

TAIL = 0.05  # tail weighting of the KS distance
NULL_BLOCKS = 16
REACH = 4.0  # a score this far below the best does not come first in a bootstrap resample


@dataclass(frozen=True)
class Comparison:
    """One channel of node ``node``; rows are indices in the windows' sorted order."""

    node: int
    channel: str
    ref_rows: np.ndarray
    ref: np.ndarray
    weights: np.ndarray
    inc_rows: np.ndarray
    inc: np.ndarray
    d: float  # plain KS distance, and its p-value
    p: float
    score: float  # standardised tail-weighted KS distance
    in_support: float
    judged: bool = False  # at least ``min_rows`` rows of each window compared


def matched(ref_context: np.ndarray, inc_context: np.ndarray, usable: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Weights on the reference rows that give them the incident's mix of contexts, and the
    incident rows that can be compared (``usable`` and in a context the reference has)."""
    _, codes = np.unique(np.concatenate([ref_context, inc_context]), return_inverse=True)
    ref_codes, inc_codes = codes[:len(ref_context)], codes[len(ref_context):]
    ref_count = np.bincount(ref_codes, minlength=codes.max() + 1)
    keep = usable & (ref_count[inc_codes] > 0)
    inc_count = np.bincount(inc_codes[keep], minlength=len(ref_count))
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.nan_to_num(inc_count[ref_codes] / ref_count[ref_codes])
    return weights, keep


def effective(weights: np.ndarray) -> float:
    """Kish's effective number of weighted rows."""
    total = float(np.sum(weights ** 2))
    return float(np.sum(weights)) ** 2 / total if total > 0 else 0.0


def compare(node: int, ref: Channel, inc: Channel, inside: np.ndarray, min_rows: int
            ) -> Comparison:
    """Channel ``ref``/``inc`` of ``node``; ``inside``: incident rows in support."""
    ref_rows = np.flatnonzero(ref.valid)
    weights, keep = matched(ref.context[ref_rows], inc.context, inside & inc.valid)
    inc_rows = np.flatnonzero(keep)
    a, b = ref.pit[ref_rows], inc.pit[inc_rows]
    d = score = 0.0
    p = 1.0
    if len(b) >= min_rows and weights.sum() > 0:
        n_eff, ones = effective(weights), np.ones((1, len(b)))
        d = float(ks.distances(a, b, weights[None, :], ones)[0])
        p = ks.p_value(float(ks.standardised(d, n_eff, len(b))))
        score = float(ks.standardised(ks.distances(a, b, weights[None, :], ones, TAIL)[0],
                                      n_eff, len(b)))
    in_support = float(np.mean(inside[inc.valid])) if inc.valid.any() else 0.0
    judged = len(b) >= min_rows and int(np.count_nonzero(weights)) >= min_rows
    return Comparison(node, ref.name, ref_rows, a, weights, inc_rows, b, d, p, score,
                      in_support, judged)


def null_threshold(comparisons: list[Comparison], ref: Split, alpha: float, splits: int,
                   min_rows: int, rng: np.random.Generator) -> float:
    """The (1 - alpha) quantile of the largest score over all comparisons between two
    halves of the held-out reference rows that one model scores (halves made of contiguous
    blocks, so drift within the reference counts as normal); never below the level of a
    single test."""
    maxima = []
    for f in (0, 1):
        part = ref.part(f)
        n = part.stop - part.start
        if n < 2 * min_rows:
            continue
        block = np.minimum((np.argsort(np.argsort(ref.position[part])) * NULL_BLOCKS) // n,
                           NULL_BLOCKS - 1)
        picks = np.array([rng.permutation(NULL_BLOCKS) < NULL_BLOCKS // 2
                          for _ in range(splits)])
        side = picks[:, block]
        best = np.zeros(splits)
        for c in comparisons:
            mine = (c.ref_rows >= part.start) & (c.ref_rows < part.stop)
            if mine.sum() < 2 * min_rows:
                continue
            u = c.ref[mine]
            if u.min() == u.max():  # any two halves of one value are 0 apart
                continue
            wa = side[:, c.ref_rows[mine] - part.start].astype(float)
            wb = 1.0 - wa
            na, nb = wa.sum(1), wb.sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                score = ks.split_distances(u, wa, wb, TAIL) * np.sqrt(na * nb / (na + nb))
            best = np.maximum(best, np.nan_to_num(score))
        maxima.append(best)
    level = ks.critical(alpha)
    if not maxima:
        return level
    return max(float(np.quantile(np.concatenate(maxima), 1 - alpha)), level)


def bootstrap_scores(comparisons: list[Comparison], nodes: list[int], n_ref: int, n_inc: int,
                     resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Scores (resamples x ``nodes``, a node's best channel) on bootstrap resamples of both
    windows; comparisons far below the best score are left at 0."""
    column = {j: i for i, j in enumerate(nodes)}
    wa = rng.multinomial(n_ref, np.full(n_ref, 1 / n_ref), size=resamples)
    wb = rng.multinomial(n_inc, np.full(n_inc, 1 / n_inc), size=resamples)
    out = np.zeros((resamples, len(nodes)))
    best = max((c.score for c in comparisons), default=0.0)
    for c in comparisons:
        if c.node in column and c.score > 0 and c.score >= best - REACH:
            d = ks.distances(c.ref, c.inc, wa[:, c.ref_rows] * c.weights[None, :],
                             wb[:, c.inc_rows].astype(float), TAIL)
            i = column[c.node]
            out[:, i] = np.maximum(out[:, i], np.nan_to_num(
                ks.standardised(d, effective(c.weights), len(c.inc))))
    return out
