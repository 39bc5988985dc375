"""Exact Shapley attribution of a target change to a few candidate mechanisms.

Players are candidate nodes; a coalition S runs the graph with the *changed* version of the
mechanisms in S (learned on the incident, or the request's own noise) and the *normal*
version of the other candidates. Only the descendants of S are recomputed, each from its
new parents and the request's own noise (abduction), so the rest of every request stays as
observed. With k <= 5 players all 2^k coalitions are evaluated: exact, no sampling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from math import factorial

import networkx as nx
import numpy as np

from causal.graph import CausalGraph
from causal.mechanisms import Mechanism


def exact_shapley(players: Sequence[int], value: Callable[[frozenset[int]], float]
                  ) -> dict[int, float]:
    """Shapley values of ``value`` (a set function with ``value(frozenset()) = baseline``)."""
    n = len(players)
    worth = {frozenset(s): value(frozenset(s))
             for size in range(n + 1) for s in combinations(players, size)}
    phi = {}
    for p in players:
        others = [q for q in players if q != p]
        total = 0.0
        for size in range(n):
            weight = factorial(size) * factorial(n - size - 1) / factorial(n)
            for s in combinations(others, size):
                total += weight * (worth[frozenset(s) | {p}] - worth[frozenset(s)])
        phi[p] = total
    return phi


@dataclass(frozen=True)
class Version:
    """A way to generate one node: its mechanism per slice of rows, with each row's noise."""

    parts: list[tuple[slice, Mechanism]]
    noise: np.ndarray


class Propagation:
    """Recomputes the nodes downstream of replaced mechanisms, in topological order."""

    def __init__(self, graph: CausalGraph, X: np.ndarray, targets: list[int],
                 normal: Callable[[int], Version], rng: np.random.Generator) -> None:
        self.graph = graph
        self.X = X
        self.normal = normal
        relevant: set[str] = set()
        for t in targets:
            relevant |= nx.ancestors(graph.dag, graph.nodes[t]) | {graph.nodes[t]}
        self.relevant = {graph.index[n] for n in relevant}
        self._normal: dict[int, Version] = {}
        self.seed = int(rng.integers(2**32))  # the same draws in every coalition

    def downstream(self, nodes: frozenset[int]) -> list[int]:
        reach: set[int] = set(nodes)
        for j in nodes:
            reach |= {self.graph.index[d] for d in nx.descendants(self.graph.dag,
                                                                 self.graph.nodes[j])}
        return sorted(reach & self.relevant)

    def run(self, changed: dict[int, Version]) -> np.ndarray:
        """The rows with the mechanisms in ``changed`` swapped in and their effects spread."""
        X = self.X.copy()
        for j in self.downstream(frozenset(changed)):
            if j not in changed and j not in self._normal:
                self._normal[j] = self.normal(j)
            version = changed.get(j) or self._normal[j]
            rng = np.random.default_rng([self.seed, j])
            for rows, mechanism in version.parts:
                X[rows, j] = mechanism.generate(X[rows], version.noise[rows], rng)
        return X
