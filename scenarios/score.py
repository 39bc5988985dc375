"""Scoring a ranking against a scenario's ground truth.

A ranking lists candidates (columns of the trace frame, each with the step it belongs to);
several candidates may name the same step. What counts is the order of distinct *suspects*,
named as the causal module names a candidate's step: a step name, a pipeline's name for its
input tensors, ``<pipeline>.outputs`` for its outputs. The ground truth's rank is its
position among the suspects (1 = top), None when it is absent or when the ranking said
there was no fault.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from scenarios.spec import INPUTS


def truth_nodes(truths: Iterable[str], target: str) -> list[str]:
    """Ground truth as suspects: a step, or the target pipeline's name for its inputs."""
    return [target if t == INPUTS else t for t in truths]


def suspects(ranking: Any) -> list[dict[str, Any]]:
    """Distinct suspects in rank order, each with its best candidate's node, score and
    confidence (None when the method does not estimate one)."""
    out: dict[str, dict[str, Any]] = {}
    for c in ranking.candidates:
        name = str(c.step or c.node)
        if name not in out:
            confidence = None if c.confidence is None else float(c.confidence)
            out[name] = {"name": name, "node": str(c.node), "score": float(c.score),
                         "confidence": confidence}
    return list(out.values())


def truth_rank(named: Sequence[dict[str, Any]], truths: Sequence[str], no_fault: bool) -> int | None:
    """Rank of the first ground-truth suspect in ``named`` (from :func:`suspects`)."""
    if no_fault or not truths:
        return None
    for rank, s in enumerate(named, 1):
        if s["name"] in truths:
            return rank
    return None
