"""Two-fold cross-fitting of every node's mechanism on the reference window.

Each reference request is scored by the mechanism learned on the *other* half, and each
incident request by one of the two (half of them each). Under "nothing changed", a
reference score and an incident score are then draws from the same distribution, whatever
the quality of the learned mechanism, so comparing them is a valid two-sample test: model
misfit costs power, not false alarms.

Rows are kept sorted by the model that scores them, so each model sees a contiguous slice
(a view, not a copy, of a matrix with one column per node).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causal.encoding import Encoding
from causal.graph import CausalGraph
from causal.mechanisms import Channel, Mechanism, fit_mechanism


@dataclass(frozen=True)
class Split:
    """Rows sorted by the model that scores them: ``X[:cut]`` by model 0, the rest by model
    1; ``position[i]`` is sorted row i's position in the window as given."""

    X: np.ndarray
    cut: int
    position: np.ndarray

    @classmethod
    def balanced(cls, X: np.ndarray, rng: np.random.Generator) -> Split:
        labels = np.arange(len(X)) % 2
        rng.shuffle(labels)
        position = np.argsort(labels, kind="stable")
        return cls(X[position], int(np.sum(labels == 0)), position)

    def part(self, f: int) -> slice:
        return slice(0, self.cut) if f == 0 else slice(self.cut, len(self.X))


@dataclass
class CrossFit:
    """``models[j][f]`` is node j's mechanism learned on the reference rows that model 1-f
    scores; it scores the other reference rows (``ref.part(f)``) and new rows assigned to f."""

    graph: CausalGraph
    enc: Encoding
    ref: Split
    models: list[tuple[Mechanism, Mechanism]]

    @classmethod
    def fit(cls, graph: CausalGraph, enc: Encoding, X: np.ndarray, rng: np.random.Generator
            ) -> CrossFit:
        ref = Split.balanced(X, rng)
        train = (ref.X[ref.part(1)], ref.X[ref.part(0)])
        models = []
        for j, node in enumerate(graph.nodes):
            parents = [graph.index[p] for p in graph.parents[node]]
            models.append((fit_mechanism(enc, j, parents, train[0]),
                           fit_mechanism(enc, j, parents, train[1])))
        return cls(graph, enc, ref, models)

    def channels(self, j: int, rows: Split) -> list[Channel]:
        """Node j's channels for ``rows`` (sorted order), each row by its own model; contexts
        of the two models kept apart."""
        per_model = [self.models[j][f].channels(rows.X[rows.part(f)]) for f in (0, 1)]
        return [Channel(c0.name, np.concatenate([c0.pit, c1.pit]),
                        np.concatenate([2 * c0.context, 2 * c1.context + 1]),
                        np.concatenate([c0.valid, c1.valid]))
                for c0, c1 in zip(*per_model, strict=True)]

    def surprise(self, j: int, rows: Split) -> np.ndarray:
        return np.concatenate([self.models[j][f].surprise(rows.X[rows.part(f)])
                               for f in (0, 1)])

    def in_support(self, j: int, rows: Split) -> np.ndarray:
        return np.concatenate([self.models[j][f].design.in_support(rows.X[rows.part(f)])
                               for f in (0, 1)])
