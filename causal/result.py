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


NOT_JUDGED = "not enough data to judge"


@dataclass
class Ranking:
    """Candidates best first; ``no_fault`` when nothing departs beyond the method's threshold.

    ``judged`` is False when the windows held too few requests for anything to be compared
    (``details["not_judged"]`` says why): then neither a fault nor "no fault" is claimed
    (``no_fault`` is False, there are no candidates), and :attr:`verdict` says so."""

    method: str
    mode: str  # "shift" (two windows) or "anomaly" (one request)
    candidates: list[Candidate]
    no_fault: bool
    seconds: float = 0.0
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    judged: bool = True

    @property
    def verdict(self) -> str:
        """"fault", "no fault" or "not enough data to judge"."""
        if not self.judged:
            return NOT_JUDGED
        return "no fault" if self.no_fault else "fault"

    @property
    def top(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def steps(self) -> list[str]:
        return [c.step for c in self.candidates]

    def to_dict(self) -> dict[str, Any]:
        return _plain({"method": self.method, "mode": self.mode, "no_fault": self.no_fault,
                       "judged": self.judged, "verdict": self.verdict,
                       "seconds": self.seconds, "threshold": self.threshold,
                       "details": self.details,
                       "candidates": [c.to_dict() for c in self.candidates]})

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self, top: int = 10) -> str:
        """A plain-text table of the first ``top`` candidates, under a one-line verdict."""
        head = (f"method {self.method} ({self.mode}), {self.seconds:.2f} s: "
                + (f"{NOT_JUDGED}: {self.details.get('not_judged', 'too few requests')}"
                   if not self.judged else "no fault" if self.no_fault else
                   f"fault, most likely in step {self.top.step}" if self.top else "no candidates"))
        note = load_note(self.details)
        if note:
            head += f" ({note})"
        if not self.judged:
            return head
        rows = [("rank", "step", "node", "score", "confidence", "evidence")]
        for i, c in enumerate(self.candidates[:max(top, 0)], 1):
            brief = ", ".join(f"{k}={_brief(v, k)}" for k, v in c.evidence.items()
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


def _brief(value: Any, key: str = "") -> str:
    """A number of the evidence, short: statistics to 3 significant digits; a request's
    ``value`` as it is when whole (1999, 2000), else to 6 significant digits."""
    if isinstance(value, float | np.floating) and not isinstance(value, bool):
        value = float(value)
        if key == "value":
            if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
                return str(int(value))
            return f"{value:.6g}"
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
