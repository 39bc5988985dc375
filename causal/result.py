"""What a localisation returns: candidate steps, best first, as Python objects and JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from causal.graph import CausalGraph


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and non-finite floats made JSON-friendly."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class Candidate:
    """A step suspected of causing the fault, through its most departing ``node``.

    ``score`` is the method's own measure (higher is more suspect); ``confidence`` is the
    fraction of bootstrap resamples in which this step came first (None when the method
    does not estimate it); ``evidence`` holds method-specific numbers behind the score.
    """

    node: str
    step: str
    score: float
    confidence: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain({"node": self.node, "step": self.step, "score": self.score,
                       "confidence": self.confidence, "evidence": self.evidence})


@dataclass
class Ranking:
    """Candidates best first; ``no_fault`` when nothing departs beyond the method's threshold."""

    method: str
    mode: str  # "shift" (two windows) or "anomaly" (one request)
    candidates: list[Candidate]
    no_fault: bool
    seconds: float = 0.0
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def top(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def steps(self) -> list[str]:
        return [c.step for c in self.candidates]

    def to_dict(self) -> dict[str, Any]:
        return _plain({"method": self.method, "mode": self.mode, "no_fault": self.no_fault,
                       "seconds": self.seconds, "threshold": self.threshold,
                       "details": self.details,
                       "candidates": [c.to_dict() for c in self.candidates]})

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self, top: int = 10) -> str:
        """A plain-text table of the first ``top`` candidates, under a one-line verdict."""
        head = (f"method {self.method} ({self.mode}), {self.seconds:.2f} s: "
                + ("no fault" if self.no_fault else
                   f"fault, most likely in step {self.top.step}" if self.top else "no candidates"))
        note = load_note(self.details)
        if note:
            head += f" ({note})"
        rows = [("rank", "step", "node", "score", "confidence", "evidence")]
        for i, c in enumerate(self.candidates[:top], 1):
            brief = ", ".join(f"{k}={_brief(v)}" for k, v in c.evidence.items()
                              if not isinstance(v, Mapping | list))
            conf = "" if c.confidence is None else f"{c.confidence:.2f}"
            rows.append((str(i), c.step, c.node, f"{c.score:.4g}", conf, brief))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
                 for r in rows]
        return "\n".join([head, *(line.rstrip() for line in lines)])


def load_note(details: Mapping[str, Any]) -> str:
    """A sentence on a ranking's machine-load correction of step latencies
    (:mod:`causal.load`), when it made one of more than 5 %; else empty."""
    factor = details.get("load_factor")
    if factor is None or abs(math.log(factor)) < math.log(1.05):
        return ""
    return (f"all steps ran {factor:.2f}x as long as in the reference (machine load); "
            "latencies were corrected for it")


def _brief(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def rank_steps(graph: CausalGraph, scores: Mapping[str, float],
               evidence: Mapping[str, dict[str, Any]] | None = None) -> list[Candidate]:
    """One candidate per step, through its highest-scoring node; best first, ties going to
    the step whose node comes first in topological order (upstream explains downstream)."""
    best: dict[str, str] = {}
    for node, score in scores.items():
        step = graph.step(node)
        if step not in best or (score, -graph.index[node]) > (scores[best[step]],
                                                              -graph.index[best[step]]):
            best[step] = node
    ordered = sorted(best.values(), key=lambda n: (-scores[n], graph.index[n]))
    evidence = evidence or {}
    return [Candidate(node=n, step=graph.step(n), score=float(scores[n]),
                      evidence=dict(evidence.get(n, {}))) for n in ordered]
