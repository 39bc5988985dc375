"""Refining the leading candidates by their exact Shapley share in the pipeline output.

Players are the significant top steps (at most five). Shift: a coalition runs the reference
requests with the incident's mechanisms for its steps (learned on the incident window, each
request paired with an incident request's noise); the value is the KS distance between the
output so produced and the reference output. One request: a coalition keeps the request's
own noise for its steps and draws reference noise for the other players; the value is the
output's surprise. Either way only the nodes downstream of a changed step are recomputed
(:mod:`causal.attribution`).

The shares reorder only *contenders*, steps that came first in at least ``CONTENDER`` of the
bootstrap resamples, and only when the output did change: a clear leader stays, because the
departure is the direct evidence while a share depends on learned mechanisms that may
extrapolate.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from causal import ks
from causal.attribution import Propagation, Version, exact_shapley
from causal.crossfit import CrossFit, Split
from causal.encoding import Encoding
from causal.graph import CausalGraph
from causal.mechanisms import fit_mechanism
from causal.result import Candidate

CONTENDER = 0.05
ROW_SAMPLES = 100


def _absent_low(x: np.ndarray) -> np.ndarray:
    """Values ready for a KS comparison: absent (NaN) ordered below everything."""
    return np.where(np.isnan(x), -np.inf, x)


def _marginal_surprise(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """-log10 of the two-sided tail of each value among sorted reference values."""
    n = len(reference)
    mid = (np.searchsorted(reference, values, "left")
           + np.searchsorted(reference, values, "right")) / (2.0 * n)
    return -np.log10(np.maximum(2 * np.minimum(mid, 1 - mid), 1 / (n + 1)))


def _players(graph: CausalGraph, candidates: list[Candidate], found: dict[str, float],
             top_k: int) -> tuple[list[Candidate], dict[str, list[int]]]:
    """The leading steps with findings (significant departures), and the nodes of each
    that departed."""
    players = [c for c in candidates[:top_k] if c.node in found]
    members = {c.step: [graph.index[n] for n in graph.nodes
                        if graph.step(n) == c.step and n in found]
               for c in players}
    return players, members


def refine_shift(graph: CausalGraph, enc: Encoding, fit: CrossFit, inc: Split,
                 candidates: list[Candidate], found: dict[str, float], top_k: int,
                 alpha: float, details: dict[str, Any], rng: np.random.Generator
                 ) -> list[Candidate]:
    players, members = _players(graph, candidates, found, top_k)
    X = fit.ref.X
    pair = rng.integers(len(inc.X), size=len(X))
    changed: dict[int, Version] = {}
    for nodes in members.values():
        for j in nodes:
            parents = [graph.index[p] for p in graph.parents[graph.nodes[j]]]
            mechanism = fit_mechanism(enc, j, parents, inc.X)
            changed[j] = Version([(slice(None), mechanism)], mechanism.abduct(inc.X, rng)[pair])

    def normal(j: int) -> Version:
        parts = [(fit.ref.part(f), fit.models[j][f]) for f in (0, 1)]
        return Version(parts, np.vstack([m.abduct(X[rows], rng) for rows, m in parts]))

    targets = [graph.index[t] for t in graph.targets]
    sim = Propagation(graph, X, targets, normal, rng)
    base = [_absent_low(X[:, t]) for t in targets]

    def value(coalition: frozenset[int]) -> float:
        out = sim.run({j: changed[j] for i in coalition for j in members[players[i].step]})
        return float(np.mean([ks.distance(_absent_low(out[:, t]), b)
                              for t, b in zip(targets, base, strict=True)]))

    phi = exact_shapley(list(range(len(players))), value)
    total = value(frozenset(range(len(players))))
    moved = total >= ks.critical(alpha) * np.sqrt(2.0 / len(X))
    details["output_change"] = total
    details["output_changed"] = bool(moved)
    return reorder(candidates, {c.step: phi[i] for i, c in enumerate(players)}, moved)


def refine_request(graph: CausalGraph, fit: CrossFit, x: np.ndarray,
                   candidates: list[Candidate], found: dict[str, float], top_k: int,
                   alpha: float, details: dict[str, Any], rng: np.random.Generator
                   ) -> list[Candidate]:
    players, members = _players(graph, candidates, found, top_k)
    X = np.repeat(x, ROW_SAMPLES, axis=0)
    donors = rng.integers(len(fit.ref.X), size=ROW_SAMPLES)

    def normal(j: int) -> Version:
        model = fit.models[j][0]
        return Version([(slice(None), model)], model.abduct(X, rng))

    drawn: dict[int, Version] = {}
    for nodes in members.values():
        for j in nodes:
            noise = np.vstack([fit.models[j][f].abduct(fit.ref.X[fit.ref.part(f)], rng)
                               for f in (0, 1)])[donors]
            drawn[j] = Version([(slice(None), fit.models[j][0])], noise)
    targets = [graph.index[t] for t in graph.targets]
    sim = Propagation(graph, X, targets, normal, rng)
    reference = [np.sort(_absent_low(fit.ref.X[:, t])) for t in targets]

    def surprise(out: np.ndarray) -> float:
        return float(np.mean([_marginal_surprise(_absent_low(out[:, t]), r).mean()
                              for t, r in zip(targets, reference, strict=True)]))

    def value(coalition: frozenset[int]) -> float:
        return surprise(sim.run({j: drawn[j] for i, c in enumerate(players)
                                 if i not in coalition for j in members[c.step]}))

    phi = exact_shapley(list(range(len(players))), value)
    observed = surprise(x)
    unusual = observed >= -np.log10(alpha)
    details["output_surprise"] = observed
    details["output_changed"] = bool(unusual)
    return reorder(candidates, {c.step: phi[i] for i, c in enumerate(players)}, unusual)


def reorder(candidates: list[Candidate], shares: dict[str, float], use: bool
            ) -> list[Candidate]:
    """Record each player's share; with ``use``, contenders swap places by share."""
    marked = [replace(c, evidence={**c.evidence, "shapley": shares[c.step]})
              if c.step in shares else c for c in candidates]
    if not use:
        return marked
    places = [i for i, c in enumerate(marked)
              if c.step in shares and (c.confidence or 0.0) >= CONTENDER]
    ordered = sorted((marked[i] for i in places), key=lambda c: -shares[c.step])
    for i, c in zip(places, ordered, strict=True):
        marked[i] = c
    return marked
