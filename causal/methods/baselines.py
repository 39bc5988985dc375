"""Simple baselines that ignore the mechanisms: per-node z-scores, the first anomalous node
in topological order, and a random ranking.

They look at each node's values alone (absent values count as 0, discrete nodes by level
code), so a fault anywhere upstream makes every downstream node look anomalous too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from causal.encoding import fit_encoding
from causal.graph import CausalGraph
from causal.methods.base import Method, check_alpha, check_seed
from causal.result import Candidate, Ranking, rank_steps

TINY = 1e-12


def _numbers(graph: CausalGraph, *frames: pd.DataFrame) -> list[np.ndarray]:
    enc = fit_encoding(graph.nodes, frames, graph.latency_nodes)
    return [np.nan_to_num(enc.encode(f)) for f in frames]


class ZScore(Method):
    """Shift: Welch t of each node's mean; anomaly: the request's z against the reference.
    "No fault" below the two-sided Bonferroni level ``alpha`` over all nodes."""

    name = "zscore"
    modes = frozenset({"shift", "anomaly"})

    def __init__(self, alpha: float = 0.01) -> None:
        check_alpha(alpha)
        self.alpha = alpha

    def statistics(self, graph: CausalGraph, reference: pd.DataFrame, other: pd.DataFrame,
                   single: bool) -> np.ndarray:
        ref, new = _numbers(graph, reference, other)
        gap = np.abs(new.mean(0) - ref.mean(0))
        spread = (ref.std(0) if single
                  else np.sqrt(ref.var(0) / len(ref) + new.var(0) / len(new)))
        floor = TINY * (np.abs(ref).max(0, initial=0.0) + 1.0)
        return np.where(gap <= floor, 0.0, gap / np.maximum(spread, floor))

    def level(self, graph: CausalGraph) -> float:
        return float(norm.isf(self.alpha / (2 * max(len(graph.nodes), 1))))

    def _rank(self, graph: CausalGraph, stats: np.ndarray, mode: str) -> Ranking:
        level = self.level(graph)
        scores = dict(zip(graph.nodes, stats.tolist(), strict=True))
        candidates = rank_steps(graph, scores)
        return Ranking(self.name, mode, self.order(graph, candidates, level),
                       no_fault=not candidates or candidates[0].score < level, threshold=level)

    def order(self, graph: CausalGraph, candidates: list[Candidate], level: float
              ) -> list[Candidate]:
        return candidates

    def shift(self, graph: CausalGraph, reference: pd.DataFrame, incident: pd.DataFrame
              ) -> Ranking:
        return self._rank(graph, self.statistics(graph, reference, incident, False), "shift")

    def anomaly(self, graph: CausalGraph, reference: pd.DataFrame, request: pd.DataFrame
                ) -> Ranking:
        return self._rank(graph, self.statistics(graph, reference, request[:1], True),
                          "anomaly")


class FirstAnomalous(ZScore):
    """The nodes beyond the z-score level in topological order (the most upstream anomaly
    first), then the others by z-score."""

    name = "first-anomalous"

    def order(self, graph: CausalGraph, candidates: list[Candidate], level: float
              ) -> list[Candidate]:
        def key(c: Candidate) -> tuple[bool, float]:
            flagged = c.score >= level
            return (not flagged, graph.index[c.node] if flagged else -c.score)

        return sorted(candidates, key=key)


class RandomRanking(Method):
    """Steps in random order: the floor every method must beat."""

    name = "random"
    modes = frozenset({"shift", "anomaly"})

    def __init__(self, seed: int = 0) -> None:
        check_seed(seed)
        self.seed = seed

    def _rank(self, graph: CausalGraph, mode: str) -> Ranking:
        rng = np.random.default_rng(self.seed)
        scores: dict[str, Any] = dict(zip(graph.nodes, rng.random(len(graph.nodes)).tolist(),
                                          strict=True))
        return Ranking(self.name, mode, rank_steps(graph, scores), no_fault=False)

    def shift(self, graph: CausalGraph, reference: pd.DataFrame, incident: pd.DataFrame
              ) -> Ranking:
        return self._rank(graph, "shift")

    def anomaly(self, graph: CausalGraph, reference: pd.DataFrame, request: pd.DataFrame
                ) -> Ranking:
        return self._rank(graph, "anomaly")
