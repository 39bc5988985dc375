"""flowcause: rank steps by how far each node departs from what its own parents predict.

In a dataflow pipeline every node is observed with all of its causes, so each mechanism can
be checked on its own: learn it on the reference window (:mod:`causal.crossfit`), and ask
whether the incident's values, *given their observed parents*, still look like draws from
it. A node downstream of the fault receives changed inputs but, given those inputs, behaves
as before (deterministic steps exactly so), so only the faulty step departs. One pass over
the nodes: time linear in the size of the graph.

Shift (two windows): every channel of every node is compared between the windows
(:mod:`causal.comparison`); a node scores its best channel, a step its best node, and
departures of values outrank departures of latency (:func:`values_first`). Latencies are
first corrected for machine load, and count only when they changed materially
(:mod:`causal.load`). "No fault" when no node departs beyond the threshold calibrated on the
reference window itself at level ``alpha`` (:func:`findings`). Confidence: the fraction of
bootstrap resamples of both windows in which the step comes first.

One request: a node's score is its surprise given its parents (-log10 of a tail
probability); a step that failed on the request (error, timeout) or dropped an output, as
it hardly ever did in the reference, is a finding as observed (:func:`observed_breaks`); a
step's latency also scores how far it lies above the reference's latencies
(:mod:`causal.slowness`); each node's surprises are divided by the inflation its reference
shows (:mod:`causal.calibration`). "No fault" when the largest surprise is within what
held-out reference requests show at level ``alpha``, values and latencies calibrated apart
(``alpha / 2`` each; a latency must also lie clearly beyond the step's usual spread);
confidence from resampling the reference.

Either way the significant leading steps are then refined by their exact Shapley share in
the pipeline output (:mod:`causal.refinement`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from causal.calibration import calibrate
from causal.comparison import bootstrap_scores, compare, null_threshold
from causal.crossfit import CrossFit, Split
from causal.encoding import fit_encoding
from causal.graph import CausalGraph
from causal.load import LatencyChange, correct_for_load, latencies
from causal.methods.base import Method, check_alpha, check_seed, is_integer
from causal.refinement import refine_request, refine_shift
from causal.result import Candidate, Ranking, rank_steps
from causal.slowness import MIN_REQUEST_SPREADS, Slowness, cross_fitted

BOOTSTRAP_STEPS = 10  # confidence is shared among the nodes of this many leading steps


class FlowCause(Method):
    name = "flowcause"
    modes = frozenset({"shift", "anomaly"})

    def __init__(self, alpha: float = 0.01, bootstrap: int = 100, top_k: int = 5,
                 null_splits: int = 100, min_rows: int = 10, shapley: bool = True,
                 seed: int = 0) -> None:
        if not is_integer(top_k) or not 1 <= top_k <= 5:
            raise ValueError(f"top_k must be between 1 and 5 (a whole number; exact Shapley "
                             f"over 2^k coalitions), got {top_k!r}")
        check_alpha(alpha)
        if not is_integer(bootstrap) or bootstrap < 0:
            raise ValueError(f"bootstrap must be a whole number >= 0 (resamples; 0: no "
                             f"confidence), got {bootstrap!r}")
        if not is_integer(null_splits) or null_splits < 1:
            raise ValueError(f"null_splits must be a whole number >= 1 (splits of the reference "
                             f"that set the no-fault threshold), got {null_splits!r}")
        if not is_integer(min_rows) or min_rows < 1:
            raise ValueError(f"min_rows must be a whole number >= 1, got {min_rows!r}")
        if not isinstance(shapley, (bool, np.bool_)):  # "False", "maybe": strings, and true
            raise ValueError(f"shapley must be true or false, got {shapley!r}")
        check_seed(seed)
        self.alpha = alpha
        self.bootstrap = bootstrap
        self.top_k = top_k
        self.null_splits = null_splits
        self.min_rows = min_rows
        self.shapley = shapley
        self.seed = seed

    def shift(self, graph: CausalGraph, reference: pd.DataFrame, incident: pd.DataFrame
              ) -> Ranking:
        rng = np.random.default_rng(self.seed)
        incident, factor, change = correct_for_load(graph.latency_nodes, reference, incident)
        enc = fit_encoding(graph.nodes, [reference, incident], graph.latency_nodes)
        fit = CrossFit.fit(graph, enc, enc.encode(reference), rng)
        inc = Split.balanced(enc.encode(incident), rng)
        comparisons = [compare(j, r, i, inside, self.min_rows)
                       for j in range(len(graph.nodes))
                       for inside in [fit.in_support(j, inc)]
                       for r, i in zip(fit.channels(j, fit.ref), fit.channels(j, inc),
                                       strict=True)]
        scores: dict[str, float] = dict.fromkeys(graph.nodes, 0.0)
        evidence: dict[str, dict[str, Any]] = {}
        for c in comparisons:
            node = graph.nodes[c.node]
            if node not in evidence or c.score > scores[node]:
                scores[node] = c.score
                evidence[node] = {"channel": c.channel, "ks": c.d, "p_value": c.p,
                                  "rows": len(c.inc_rows), "in_support": c.in_support,
                                  "model": fit.models[c.node][0].model}
        for node, c in change.items():
            if node in evidence:
                evidence[node].update(c.evidence())
        threshold = null_threshold(comparisons, fit.ref, self.alpha, self.null_splits,
                                   self.min_rows, rng)
        found = findings(graph, scores, threshold, change)
        candidates = values_first(graph, scores, evidence, found)
        judged = sum(c.judged for c in comparisons)
        if not found and not judged:  # no departure, but nothing could have shown one
            return self._not_judged("shift", threshold, {
                "reference_rows": len(fit.ref.X), "incident_rows": len(inc.X),
                "targets": graph.targets, "load_factor": factor, "judged_channels": 0,
                "not_judged": f"no node could be compared on at least {self.min_rows} "
                              f"requests (min_rows) of each window (reference {len(fit.ref.X)}, "
                              f"incident {len(inc.X)} requests)"})
        no_fault = not found
        if self.bootstrap and candidates:
            nodes = self._leading_nodes(graph, candidates)
            resampled = bootstrap_scores(comparisons, nodes, len(fit.ref.X), len(inc.X),
                                         self.bootstrap, rng)
            values = np.array([graph.info[graph.nodes[j]].role != "latency" for j in nodes])
            confidence = first_counts(graph, nodes, resampled, np.zeros(len(nodes)),
                                      (resampled > threshold) & values)
            candidates = [replace(c, confidence=confidence.get(c.step, 0.0))
                          for c in candidates]
        details: dict[str, Any] = {"reference_rows": len(fit.ref.X),
                                   "incident_rows": len(inc.X), "targets": graph.targets,
                                   "load_factor": factor, "judged_channels": judged}
        if self.shapley and not no_fault:
            candidates = refine_shift(graph, enc, fit, inc, candidates, found, self.top_k,
                                      self.alpha, details, rng)
        return Ranking(self.name, "shift", candidates, no_fault, threshold=threshold,
                       details=details)

    def anomaly(self, graph: CausalGraph, reference: pd.DataFrame, request: pd.DataFrame
                ) -> Ranking:
        rng = np.random.default_rng(self.seed)
        request, factor, change = correct_for_load(graph.latency_nodes, reference, request)
        enc = fit_encoding(graph.nodes, [reference, request], graph.latency_nodes)
        fit = CrossFit.fit(graph, enc, enc.encode(reference), rng)
        x = enc.encode(request)[:1]
        both = Split(np.vstack([x, x]), 1, np.zeros(2, dtype=np.int64))  # by either model
        nodes = range(len(graph.nodes))
        # a node whose parents lie outside what its mechanism was learned on is not judged:
        # its surprise would be its parents' (windows, too, compare only rows in support)
        ref_surprise = np.column_stack([fit.surprise(j, fit.ref) * fit.in_support(j, fit.ref)
                                        for j in nodes])
        inside = np.array([fit.in_support(j, both).all() for j in nodes])
        surprise = np.array([fit.surprise(j, both).mean() for j in nodes]) * inside
        held_out = np.arange(len(fit.ref.X)) < fit.ref.cut
        ref_surprise, surprise = calibrate(ref_surprise, surprise, held_out)
        # slowness has a robust scale of its own, so it joins after the calibration: a
        # latency whose buckets barely vary has an inflated mechanism, not a slow step
        latency = np.zeros(len(graph.nodes), dtype=bool)  # latencies the reference has
        for node in graph.latency_nodes:  # how much slower than usual (causal.slowness)
            j, ms = graph.index[node], latencies(reference, node)
            latency[j] = not np.isnan(ms).all()
            ref_surprise[:, j] = np.maximum(ref_surprise[:, j],
                                            cross_fitted(ms[fit.ref.position], held_out))
            surprise[j] = max(surprise[j],
                              float(Slowness.of(ms).surprise(latencies(request, node)[:1])[0]))
        # values and latencies are calibrated apart, so that the reference's latency
        # outliers (a pause of the machine) do not raise the bar for values
        alpha = self.alpha / 2 if latency.any() and not latency.all() else self.alpha
        threshold = _calibrated(ref_surprise[:, ~latency], alpha)
        latency_threshold = _calibrated(ref_surprise[:, latency], alpha)
        exceed = (ref_surprise >= surprise[None, :] - 1e-12).sum(0)
        scores, evidence = {}, {}
        for j, node in enumerate(graph.nodes):
            scores[node] = float(surprise[j])
            evidence[node] = {"value": enc.decode(j, x[0, j]), "in_support": bool(inside[j]),
                              "reference_as_surprising": int(exceed[j]),
                              "model": fit.models[j][0].model}
            if node in change:
                evidence[node].update(change[node].evidence())
        clear = {n: c for n, c in change.items() if c.spreads >= MIN_REQUEST_SPREADS}
        found = findings(graph, scores, threshold, clear, latency_threshold)
        for node, kind in observed_breaks(graph, reference, request, self.alpha).items():
            found[node] = scores[node]
            evidence[node][kind] = True
        candidates = values_first(graph, scores, evidence, found)
        if not found and len(ref_surprise) < self.min_rows:
            return self._not_judged("anomaly", threshold, {
                "reference_rows": len(ref_surprise), "targets": graph.targets,
                "load_factor": factor, "latency_threshold": latency_threshold,
                "not_judged": f"the reference holds {len(ref_surprise)} requests, fewer than "
                              f"{self.min_rows} (min_rows)"})
        no_fault = not found
        if self.bootstrap and candidates:
            # resampling the reference: a node's calibrated p-value is (1 + reference
            # requests at least as surprising) / (n + 1); ties go to the larger surprise
            chosen = self._leading_nodes(graph, candidates)
            n = len(ref_surprise)
            counts = rng.binomial(n, exceed[chosen] / n, size=(self.bootstrap, len(chosen)))
            values = np.array([graph.info[graph.nodes[j]].role != "latency" for j in chosen])
            confidence = first_counts(graph, chosen, -np.log((1 + counts) / (n + 1)),
                                      surprise[chosen], (surprise[chosen] > threshold) & values)
            candidates = [replace(c, confidence=confidence.get(c.step, 0.0))
                          for c in candidates]
        details: dict[str, Any] = {"reference_rows": len(ref_surprise),
                                   "targets": graph.targets, "load_factor": factor,
                                   "latency_threshold": latency_threshold}
        if self.shapley and not no_fault:
            candidates = refine_request(graph, fit, x, candidates, found, self.top_k,
                                        self.alpha, details, rng)
        return Ranking(self.name, "anomaly", candidates, no_fault, threshold=threshold,
                       details=details)

    def _not_judged(self, mode: str, threshold: float, details: dict[str, Any]) -> Ranking:
        """Neither "fault" nor "no fault": nothing departs, but too few requests could be
        compared for a departure to show. No candidates, as none is suspected."""
        return Ranking(self.name, mode, [], no_fault=False, threshold=threshold,
                       details=details, judged=False)

    @staticmethod
    def _leading_nodes(graph: CausalGraph, candidates: list[Candidate]) -> list[int]:
        steps = {c.step for c in candidates[:BOOTSTRAP_STEPS]}
        return [j for j, node in enumerate(graph.nodes) if graph.step(node) in steps]


FAILED = ("error", "timeout")
NAN_COUNT = ".nan_count"  # a vector tensor's count of NaN elements in the trace store's frame


def observed_breaks(graph: CausalGraph, reference: pd.DataFrame, request: pd.DataFrame,
                    alpha: float) -> dict[str, str]:
    """Where the request shows a step break as observed, not inferred, while the reference
    shows it in fewer than a share ``alpha`` of its requests: a step that *failed* (status
    error or timeout; of the reference requests that ran it) or that ran fine but *dropped*
    an output or put *NaN* into one (a tensor summary's ``nan_count`` above 0; both of the
    reference requests where it ran fine). ``{node: "failed" | "dropped" | "nan"}``, the
    node being the status or the output's column. Such breaks are findings whatever their
    surprise: to a mechanism, a state the reference never showed is merely unseen, its
    surprise bounded by the reference's size, which can stay below a threshold that
    continuous nodes set. (NaN elements leave a vector's other statistics, taken over the
    rest, looking ordinary.)"""
    status: dict[str, str] = {}  # step -> its status node
    outputs: defaultdict[str, list[str]] = defaultdict(list)  # step -> its tensor outputs
    for n in graph.nodes:
        if n in request and n in reference:
            if graph.info[n].role == "status":
                status[graph.step(n)] = n
            elif graph.info[n].role == "tensor":
                outputs[graph.step(n)].append(n)
    out: dict[str, str] = {}
    for step, node in status.items():
        state = request[node].iloc[0]
        if state in FAILED:
            ran = reference[node][reference[node].isin(("ok", *FAILED))]
            if not len(ran) or float(ran.isin(FAILED).mean()) < alpha:
                out[node] = "failed"
        elif state == "ok":
            fine = (reference[node] == "ok").to_numpy()
            if not fine.any():
                continue
            for output in outputs[step]:
                value, usual = request[output].iloc[0], reference[output][fine]
                if pd.isna(value):
                    if float(usual.isna().mean()) < alpha:
                        out[output] = "dropped"
                elif (output.endswith(NAN_COUNT) and value > 0
                      and float((usual > 0).mean()) < alpha):
                    out[output] = "nan"
    return out


def _calibrated(ref_surprise: np.ndarray, alpha: float) -> float:
    """The surprise that a share ``alpha`` of reference requests exceed at some node (of
    the columns given); infinite without columns."""
    if not ref_surprise.shape[1]:
        return np.inf
    return float(np.quantile(ref_surprise.max(axis=1), 1 - alpha))


def findings(graph: CausalGraph, scores: dict[str, float], threshold: float,
             latency_change: dict[str, LatencyChange],
             latency_threshold: float | None = None) -> dict[str, float]:
    """The nodes that depart significantly: beyond ``threshold`` (a latency: beyond
    ``latency_threshold`` when given) and, for a latency, by a material amount
    (:mod:`causal.load`). None at all is "no fault"."""
    latency_bar = threshold if latency_threshold is None else latency_threshold
    return {n: v for n, v in scores.items()
            if (graph.info[n].role != "latency" and v > threshold)
            or (graph.info[n].role == "latency" and v > latency_bar
                and latency_change.get(n, LatencyChange()).material)}


def values_first(graph: CausalGraph, scores: dict[str, float],
                 evidence: dict[str, dict[str, Any]], found: dict[str, float]
                 ) -> list[Candidate]:
    """Steps ranked by their best node, except that steps with a departure of values
    (tensors, status, branches, inputs) among the ``found`` nodes come first, then steps
    whose only finding is latency, then the rest. A step's latency has causes the graph
    does not see (load, batching, the arrival rate), so beside a departure of values it is
    the weaker evidence; alone, it is the finding (a slow step)."""
    values = {n: v for n, v in found.items() if graph.info[n].role != "latency"}
    first = rank_steps(graph, values, evidence)
    named = {c.step for c in first}
    slow = rank_steps(graph, {n: v for n, v in found.items() if graph.step(n) not in named},
                      evidence)
    named |= {c.step for c in slow}
    rest = {n: v for n, v in scores.items() if graph.step(n) not in named}
    return first + slow + rank_steps(graph, rest, evidence)


def first_counts(graph: CausalGraph, nodes: list[int], scores: np.ndarray,
                 tiebreak: np.ndarray, preferred: np.ndarray) -> dict[str, float]:
    """Per step, the fraction of rows of ``scores`` (resamples x nodes) in which it comes
    first: ``preferred`` nodes (significant departures of values, as in
    :func:`values_first`) before the others, then by score, ties going to the larger
    ``tiebreak``, then to the upstream node."""
    wins: dict[str, int] = {}
    for row, liked in zip(scores, np.broadcast_to(preferred, scores.shape), strict=True):
        best = min(range(len(nodes)),
                   key=lambda i: (not liked[i], -row[i], -tiebreak[i], nodes[i]))
        step = graph.step(graph.nodes[nodes[best]])
        wins[step] = wins.get(step, 0) + 1
    return {step: count / len(scores) for step, count in wins.items()}
