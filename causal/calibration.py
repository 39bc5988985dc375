"""One request's surprises, held to what the reference itself shows at each node.

A node's surprise is -log10 of a tail probability under its mechanism's model (a normal
residual, smoothed level frequencies). Where the model fits, 1 % of reference requests are
at least 2 surprising at that node. Where its tails are too light, far more are: a value
that sits on one number for most requests and elsewhere for a few (the brightest pixel of
a frame: 255, but for the odd dark frame) has a robust spread of almost nothing, so each of
those few requests looks next to impossible. Left so, such a node sets the no-fault
threshold for the whole graph (the largest surprise of 1 % of reference requests) and no
single request could have a finding anywhere.

So each node's surprises are divided by its *inflation*: the 99th percentile of its
reference surprises over the 2 a fitting model gives there, when above 1. This is genomic
control's idea (statistics divided by how much the null distribution shows them inflated),
taken at the tail: a node that fits keeps its surprises; an exact step (reference
surprises 0) keeps the large surprise of any departure; an inflated node is read on the
scale its reference shows. Reference requests are divided by the inflation of the *other*
half of the reference (the halves the mechanisms are cross-fitted on), as they are scored.
"""

from __future__ import annotations

import numpy as np

TAIL = 0.01
FITTING_SURPRISE = -np.log10(TAIL)  # the surprise a fitting model exceeds TAIL of the time


def inflation(surprises: np.ndarray) -> float:
    """How much heavier than its model says a node's reference surprises are in their tail
    (at least 1)."""
    if not len(surprises):
        return 1.0
    return max(float(np.quantile(surprises, 1 - TAIL)) / FITTING_SURPRISE, 1.0)


def calibrate(ref_surprise: np.ndarray, surprise: np.ndarray, first: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(reference rows x nodes, request's nodes)`` surprises, each node's divided by its
    inflation; ``first`` marks one half of the reference rows."""
    ref_out = np.empty_like(ref_surprise)
    out = np.empty_like(surprise)
    for j in range(ref_surprise.shape[1]):
        column = ref_surprise[:, j]
        for part in (first, ~first):
            ref_out[part, j] = column[part] / inflation(column[~part])
        out[j] = surprise[j] / inflation(column)
    return ref_out, out
