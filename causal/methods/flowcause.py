"""flowcause: rank steps by how far each node departs from what its own parents predict.

In a dataflow pipeline every node is observed with all of its causes, so each mechanism can
be checked on its own: learn it on the reference window (:mod:`causal.crossfit`), and ask
whether the incident's values, *given their observed parents*, still look like draws from
it. A node downstream of the fault receives changed inputs but, given those inputs, behaves
as before (deterministic steps exactly so), so only the faulty step departs. One pass over
the nodes: time linear in the size of the graph.

Shift (two windows). For each channel of each node (:mod:`causal.mechanisms`: a level; a
presence and a value) the cross-fitted PITs of reference and incident requests are
compared: only incident requests whose parents lie in the reference support, the reference
reweighted to the incident's mix of contexts. The score is the standardised KS distance,
weighted towards the tails (:func:`causal.ks.distances`); a node scores its best channel, a
step its best node. "No fault" when the best score is below a threshold calibrated on the
reference window itself: the (1 - ``alpha``) quantile of the largest score over all nodes
between two halves of held-out reference requests (halves of contiguous blocks, so drift
within the reference counts as normal). Confidence: the fraction of bootstrap resamples of
both windows in which the step comes first. Refinement: the significant top steps (at most
``top_k``) get their exact Shapley share of the change in the pipeline output
(:mod:`causal.attribution`); when the output changed, close contenders are ordered by it.

Anomaly (one request). A node's score is its surprise given its parents (-log10 of a tail
probability); "no fault" when the request's largest surprise is within what held-out
reference requests show at level ``alpha``; confidence from resampling the reference; the
refinement attributes the output's surprise to the candidates' own noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from causal import ks
from causal.attribution import Propagation, Version, exact_shapley
from causal.crossfit import CrossFit, Split
from causal.encoding import Encoding, fit_encoding
from causal.graph import CausalGraph
from causal.mechanisms import Channel, fit_mechanism
from causal.methods.base import Method
from causal.result import Candidate, Ranking, rank_steps

TAIL = 0.05  # tail weighting of the KS distance (see causal.ks.distances)
NULL_BLOCKS = 16
BOOTSTRAP_STEPS = 10
ROW_SAMPLES = 100
CONTENDER = 0.05
REACH = 4.0  # a score this far below the best does not come first in a bootstrap resample


@dataclass(frozen=True)
class Comparison:
    """One channel of one node, reference against incident (rows in sorted order)."""

    node: int
    channel: str
    ref_rows: np.ndarray
    ref: np.ndarray
    weights: np.ndarray
    inc_rows: np.ndarray
    inc: np.ndarray
    d: float  # plain KS distance, and its p-value
    p: float
    lam: float  # the score: standardised tail-weighted KS distance
    in_support: float


def _absent_low(x: np.ndarray) -> np.ndarray:
    """Values ready for a KS comparison: absent (NaN) ordered below everything."""
    return np.where(np.isnan(x), -np.inf, x)


class FlowCause(Method):
    name = "flowcause"
    modes = frozenset({"shift", "anomaly"})

    def __init__(self, alpha: float = 0.01, bootstrap: int = 100, top_k: int = 5,
                 null_splits: int = 100, min_rows: int = 10, shapley: bool = True,
                 seed: int = 0) -> None:
        if not 1 <= top_k <= 5:
            raise ValueError("top_k must be between 1 and 5 (exact Shapley over 2^k coalitions)")
        self.alpha = alpha
        self.bootstrap = bootstrap
        self.top_k = top_k
        self.null_splits = null_splits
        self.min_rows = min_rows
        self.shapley = shapley
        self.seed = seed

    # ------------------------------------------------------------------ two windows

    def shift(self, graph: CausalGraph, reference: pd.DataFrame, incident: pd.DataFrame
              ) -> Ranking:
        rng = np.random.default_rng(self.seed)
        enc = fit_encoding(graph.nodes, [reference, incident], graph.latency_nodes)
        fit = CrossFit.fit(graph, enc, enc.encode(reference), rng)
        inc = Split.balanced(enc.encode(incident), rng)
        comparisons = [self._compare(j, c, r, inside)
                       for j in range(len(graph.nodes))
                       for inside in [fit.in_support(j, inc)]
                       for c, r in zip(fit.channels(j, fit.ref), fit.channels(j, inc),
                                       strict=True)]
        scores: dict[str, float] = dict.fromkeys(graph.nodes, 0.0)
        evidence: dict[str, dict[str, Any]] = {}
        for c in comparisons:
            node = graph.nodes[c.node]
            if node not in evidence or c.lam > scores[node]:
                scores[node] = c.lam
                evidence[node] = {"channel": c.channel, "ks": c.d, "p_value": c.p,
                                  "rows": len(c.inc_rows), "in_support": c.in_support,
                                  "model": fit.models[c.node][0].model}
        threshold = self._threshold(fit, comparisons, rng)
        candidates = rank_steps(graph, scores, evidence)
        no_fault = not candidates or candidates[0].score < threshold
        confidence = self._shift_confidence(graph, candidates, comparisons, len(fit.ref.X),
                                            len(inc.X), rng)
        details: dict[str, Any] = {"reference_rows": len(fit.ref.X), "incident_rows": len(inc.X),
                                   "targets": graph.targets}
        candidates = [_with(c, confidence=confidence.get(c.step, 0.0)) for c in candidates]
        if self.shapley and not no_fault:
            candidates = self._refine_shift(graph, enc, fit, inc, candidates, scores, threshold,
                                            details, rng)
        return Ranking(self.name, "shift", candidates, no_fault, threshold=threshold,
                       details=details)

    def _compare(self, j: int, ref: Channel, inc: Channel, inside: np.ndarray) -> Comparison:
        """One channel of node j: reference rows reweighted to the incident's contexts,
        against the incident rows in support."""
        ref_rows = np.flatnonzero(ref.valid)
        weights, keep = _matched(ref.context[ref_rows], inc.context, inside & inc.valid)
        inc_rows = np.flatnonzero(keep)
        a, b = ref.pit[ref_rows], inc.pit[inc_rows]
        d = lam = 0.0
        p = 1.0
        if len(b) >= self.min_rows and weights.sum() > 0:
            n_eff = _effective(weights)
            d = float(ks.distances(a, b, weights[None, :], np.ones((1, len(b))))[0])
            p = ks.p_value(float(ks.standardised(d, n_eff, len(b))))
            lam = float(ks.standardised(
                ks.distances(a, b, weights[None, :], np.ones((1, len(b))), TAIL)[0],
                n_eff, len(b)))
        in_support = float(np.mean(inside[inc.valid])) if inc.valid.any() else 0.0
        return Comparison(j, ref.name, ref_rows, a, weights, inc_rows, b, d, p, lam, in_support)

    def _threshold(self, fit: CrossFit, comparisons: list[Comparison],
                   rng: np.random.Generator) -> float:
        """The (1 - alpha) quantile of the largest score over all comparisons between two
        halves of the held-out reference rows scored by one model (halves made of contiguous
        blocks, so drift within the reference counts as normal); never below the level of a
        single test."""
        maxima = []
        for f in (0, 1):
            part = fit.ref.part(f)
            n = part.stop - part.start
            if n < 2 * self.min_rows:
                continue
            block = np.minimum((np.argsort(np.argsort(fit.ref.position[part]))
                                * NULL_BLOCKS) // n, NULL_BLOCKS - 1)
            picks = np.array([rng.permutation(NULL_BLOCKS) < NULL_BLOCKS // 2
                              for _ in range(self.null_splits)])
            side = picks[:, block]
            best = np.zeros(self.null_splits)
            for c in comparisons:
                mine = (c.ref_rows >= part.start) & (c.ref_rows < part.stop)
                if mine.sum() < 2 * self.min_rows:
                    continue
                u = c.ref[mine]
                wa = side[:, c.ref_rows[mine] - part.start].astype(float)
                wb = 1.0 - wa
                na, nb = wa.sum(1), wb.sum(1)
                d = ks.distances(u, u, wa, wb, TAIL)
                with np.errstate(invalid="ignore", divide="ignore"):
                    best = np.maximum(best, np.nan_to_num(d * np.sqrt(na * nb / (na + nb))))
            maxima.append(best)
        level = ks.critical(self.alpha)
        if not maxima:
            return level
        return max(float(np.quantile(np.concatenate(maxima), 1 - self.alpha)), level)

    def _shift_confidence(self, graph: CausalGraph, candidates: list[Candidate],
                          comparisons: list[Comparison], n_ref: int, n_inc: int,
                          rng: np.random.Generator) -> dict[str, float]:
        """Fraction of bootstrap resamples (of both windows) in which each step is first,
        among the nodes of the leading steps."""
        if not self.bootstrap or not candidates:
            return {}
        steps = {c.step for c in candidates[:BOOTSTRAP_STEPS]}
        nodes = [j for j, n in enumerate(graph.nodes) if graph.step(n) in steps]
        column = {j: i for i, j in enumerate(nodes)}
        wa = rng.multinomial(n_ref, np.full(n_ref, 1 / n_ref), size=self.bootstrap)
        wb = rng.multinomial(n_inc, np.full(n_inc, 1 / n_inc), size=self.bootstrap)
        lam = np.zeros((self.bootstrap, len(nodes)))
        best = max(c.lam for c in comparisons)
        for c in comparisons:
            if c.node in column and c.lam > 0 and c.lam >= best - REACH:
                d = ks.distances(c.ref, c.inc, wa[:, c.ref_rows] * c.weights[None, :],
                                 wb[:, c.inc_rows].astype(float), TAIL)
                i = column[c.node]
                lam[:, i] = np.maximum(lam[:, i], np.nan_to_num(
                    ks.standardised(d, _effective(c.weights), len(c.inc))))
        return _first_counts(graph, nodes, lam, np.zeros(len(nodes)))

    def _refine_shift(self, graph: CausalGraph, enc: Encoding, fit: CrossFit, inc: Split,
                      candidates: list[Candidate], scores: dict[str, float], threshold: float,
                      details: dict[str, Any], rng: np.random.Generator) -> list[Candidate]:
        """Exact Shapley shares of the significant top steps in the output's change."""
        players = [c for c in candidates[:self.top_k] if c.score >= threshold]
        members = {c.step: [graph.index[n] for n in graph.nodes
                            if graph.step(n) == c.step and scores[n] >= threshold]
                   for c in players}
        X = fit.ref.X
        pair = rng.integers(len(inc.X), size=len(X))
        versions: dict[int, Version] = {}
        for nodes in members.values():
            for j in nodes:
                parents = [graph.index[p] for p in graph.parents[graph.nodes[j]]]
                changed = fit_mechanism(enc, j, parents, inc.X)
                versions[j] = Version([(slice(None), changed)],
                                      changed.abduct(inc.X, rng)[pair])

        def normal(j: int) -> Version:
            parts = [(fit.ref.part(f), fit.models[j][f]) for f in (0, 1)]
            noise = np.vstack([m.abduct(X[rows], rng) for rows, m in parts])
            return Version(parts, noise)

        targets = [graph.index[t] for t in graph.targets]
        sim = Propagation(graph, X, targets, normal, rng)
        base = [_absent_low(X[:, t]) for t in targets]
        index = {c.step: i for i, c in enumerate(players)}

        def value(coalition: frozenset[int]) -> float:
            changed = {j: versions[j] for c in players if index[c.step] in coalition
                       for j in members[c.step]}
            out = sim.run(changed)
            return float(np.mean([ks.distance(_absent_low(out[:, t]), b)
                                  for t, b in zip(targets, base, strict=True)]))

        phi = exact_shapley(list(range(len(players))), value)
        total = value(frozenset(range(len(players))))
        n = len(X)
        changed_output = total >= ks.critical(self.alpha) * np.sqrt(2.0 / n)
        details["output_change"] = total
        details["output_changed"] = bool(changed_output)
        shares = {c.step: phi[index[c.step]] for c in players}
        return _reorder(candidates, shares, changed_output)

    # ------------------------------------------------------------------ one request

    def anomaly(self, graph: CausalGraph, reference: pd.DataFrame, request: pd.DataFrame
                ) -> Ranking:
        rng = np.random.default_rng(self.seed)
        enc = fit_encoding(graph.nodes, [reference, request], graph.latency_nodes)
        fit = CrossFit.fit(graph, enc, enc.encode(reference), rng)
        x = enc.encode(request)[:1]
        both = Split(np.vstack([x, x]), 1, np.zeros(2, dtype=np.int64))
        nodes = range(len(graph.nodes))
        # a node whose parents lie outside what its mechanism was learned on is not judged:
        # its surprise would be its parents' (as windows compare only rows in support)
        ref_surprise = np.column_stack([fit.surprise(j, fit.ref) * fit.in_support(j, fit.ref)
                                        for j in nodes])
        inside = np.array([fit.in_support(j, both).all() for j in nodes])
        surprise = np.array([fit.surprise(j, both).mean() for j in nodes]) * inside
        threshold = float(np.quantile(ref_surprise.max(axis=1), 1 - self.alpha))
        exceed = (ref_surprise >= surprise[None, :] - 1e-12).sum(0)
        scores, evidence = {}, {}
        for j, node in enumerate(graph.nodes):
            scores[node] = float(surprise[j])
            evidence[node] = {"value": enc.decode(j, x[0, j]), "in_support": bool(inside[j]),
                              "reference_as_surprising": int(exceed[j]),
                              "model": fit.models[j][0].model}
        candidates = rank_steps(graph, scores, evidence)
        no_fault = not candidates or candidates[0].score <= threshold
        confidence = self._row_confidence(graph, candidates, surprise, exceed, len(ref_surprise),
                                          rng)
        candidates = [_with(c, confidence=confidence.get(c.step, 0.0)) for c in candidates]
        details: dict[str, Any] = {"reference_rows": len(ref_surprise),
                                   "targets": graph.targets}
        if self.shapley and not no_fault:
            candidates = self._refine_row(graph, fit, x, candidates, scores, threshold,
                                          details, rng)
        return Ranking(self.name, "anomaly", candidates, no_fault, threshold=threshold,
                       details=details)

    def _row_confidence(self, graph: CausalGraph, candidates: list[Candidate],
                        surprise: np.ndarray, exceed: np.ndarray, n: int,
                        rng: np.random.Generator) -> dict[str, float]:
        """Resample the reference: a node's calibrated p-value is (1 + reference requests at
        least as surprising) / (n + 1); the step with the smallest (ties: the larger raw
        surprise) is first in each resample."""
        if not self.bootstrap or not candidates:
            return {}
        steps = [c.step for c in candidates[:BOOTSTRAP_STEPS]]
        nodes = [j for j, node in enumerate(graph.nodes) if graph.step(node) in steps]
        counts = rng.binomial(n, exceed[nodes] / n, size=(self.bootstrap, len(nodes)))
        calibrated = -np.log((1 + counts) / (n + 1))
        return _first_counts(graph, nodes, calibrated, surprise[nodes])

    def _refine_row(self, graph: CausalGraph, fit: CrossFit, x: np.ndarray,
                    candidates: list[Candidate], scores: dict[str, float], threshold: float,
                    details: dict[str, Any], rng: np.random.Generator) -> list[Candidate]:
        """Exact Shapley shares of the significant top steps' own noise in the output's
        surprise: a coalition keeps the request's noise for its steps and draws reference
        noise for the other candidates."""
        players = [c for c in candidates[:self.top_k] if c.score > threshold]
        members = {c.step: [graph.index[n] for n in graph.nodes
                            if graph.step(n) == c.step and scores[n] > threshold]
                   for c in players}
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
        index = {c.step: i for i, c in enumerate(players)}

        def value(coalition: frozenset[int]) -> float:
            changed = {j: drawn[j] for c in players if index[c.step] not in coalition
                       for j in members[c.step]}
            out = sim.run(changed)
            return float(np.mean([_marginal_surprise(_absent_low(out[:, t]), ref).mean()
                                  for t, ref in zip(targets, reference, strict=True)]))

        phi = exact_shapley(list(range(len(players))), value)
        observed = float(np.mean([_marginal_surprise(_absent_low(x[:, t]), ref)[0]
                                  for t, ref in zip(targets, reference, strict=True)]))
        unusual = observed >= -np.log10(self.alpha)
        details["output_surprise"] = observed
        details["output_changed"] = bool(unusual)
        return _reorder(candidates, {c.step: phi[index[c.step]] for c in players}, unusual)


def _matched(ref_context: np.ndarray, inc_context: np.ndarray, inside: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Weights on the reference rows that give them the incident's mix of contexts, and
    the incident rows that can be compared (in support, in a context the reference has)."""
    _, codes = np.unique(np.concatenate([ref_context, inc_context]), return_inverse=True)
    ref_codes, inc_codes = codes[:len(ref_context)], codes[len(ref_context):]
    ref_count = np.bincount(ref_codes, minlength=codes.max() + 1)
    keep = inside & (ref_count[inc_codes] > 0)
    inc_count = np.bincount(inc_codes[keep], minlength=len(ref_count))
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.nan_to_num(inc_count[ref_codes] / ref_count[ref_codes])
    return weights, keep


def _effective(weights: np.ndarray) -> float:
    """Kish's effective number of weighted rows."""
    total = float(np.sum(weights ** 2))
    return float(np.sum(weights)) ** 2 / total if total > 0 else 0.0


def _marginal_surprise(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """-log10 of the two-sided tail of each value among sorted reference values."""
    n = len(reference)
    mid = (np.searchsorted(reference, values, "left")
           + np.searchsorted(reference, values, "right")) / (2.0 * n)
    return -np.log10(np.maximum(2 * np.minimum(mid, 1 - mid), 1 / (n + 1)))


def _first_counts(graph: CausalGraph, nodes: list[int], scores: np.ndarray,
                  tiebreak: np.ndarray) -> dict[str, float]:
    """Per step, the fraction of rows of ``scores`` (resamples x nodes) in which it is first;
    ties on score go to the larger ``tiebreak``, then to the upstream node."""
    wins: dict[str, int] = {}
    for row in scores:
        best = min(range(len(nodes)), key=lambda i: (-row[i], -tiebreak[i], nodes[i]))
        step = graph.step(graph.nodes[nodes[best]])
        wins[step] = wins.get(step, 0) + 1
    return {step: count / len(scores) for step, count in wins.items()}


def _with(c: Candidate, **changes: Any) -> Candidate:
    fields = {"node": c.node, "step": c.step, "score": c.score, "confidence": c.confidence,
              "evidence": dict(c.evidence)}
    fields.update(changes)
    return Candidate(**fields)


def _reorder(candidates: list[Candidate], shares: dict[str, float], use: bool
             ) -> list[Candidate]:
    """Record each player's Shapley share; with ``use``, the *contenders* (players that came
    first in at least ``CONTENDER`` of the bootstrap resamples: their departures are not
    clearly apart) swap places so that the larger share comes first. A clear leader stays:
    the departure is the direct evidence, the share only depends on learned mechanisms
    that may extrapolate."""
    marked = [_with(c, evidence={**c.evidence, "shapley": shares[c.step]})
              if c.step in shares else c for c in candidates]
    if not use:
        return marked
    places = [i for i, c in enumerate(marked)
              if c.step in shares and (c.confidence or 0.0) >= CONTENDER]
    ordered = sorted((marked[i] for i in places), key=lambda c: -shares[c.step])
    for i, c in zip(places, ordered, strict=True):
        marked[i] = c
    return marked
