"""DoWhy GCM baselines, configured as in Paleyes & Lawrence, "Causal fault localisation in
dataflow systems" (EuroMLSys '23): empirical distributions at the roots, additive-noise
models with linear regressors elsewhere (``mechanisms="auto"`` lets DoWhy choose), the
pipeline output as target node.

- ``dowhy-shift``: ``gcm.distribution_change`` between the windows; a node's score is the
  absolute value of its attribution, "no fault" when DoWhy's mechanism-change test flags no
  node. ``test="approx"`` swaps DoWhy's kernel (KCI) mechanism-change test for its random-
  feature approximation without bootstrap runs; ``test_samples=N`` runs the kernel test on
  three random subsamples of N rows instead of all rows (its cost grows with the cube of
  the rows).
- ``dowhy-anomaly``: ``gcm.attribute_anomalies`` of one request; "no fault" when the target's
  information-theoretic anomaly score (the sum of the attributions) is below -log(alpha).

DoWhy attributes to one target node at a time; a pipeline with several output tensors has
several targets (``CausalGraph.targets``), and a fault may move only one of them. So each
method runs once per target (``target=`` picks one) and a node scores its largest score
over them; "no fault" only when no run finds one. DoWhy only scores ancestors of a target;
other nodes are not candidates. Absent values are 0 and discrete nodes their level codes,
as in the published datasets.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from causal.encoding import fit_encoding
from causal.graph import CausalGraph
from causal.methods.base import Method, check_alpha, check_seed, is_integer
from causal.result import Ranking, rank_steps

KERNEL_RUNS = 3  # kernel tests on subsamples (``test_samples``): this many, p-values averaged


def _gcm() -> Any:
    from dowhy import gcm  # slow to import: only when a DoWhy method runs

    gcm.config.disable_progress_bars()
    return gcm


def _check_count(name: str, value: object) -> None:
    if not is_integer(value) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


class _DoWhy(Method):
    def __init__(self, mechanisms: str = "linear", target: str | None = None, seed: int = 0
                 ) -> None:
        if mechanisms not in ("linear", "auto"):
            raise ValueError("mechanisms must be 'linear' (as published) or 'auto'")
        if target is not None and not isinstance(target, str):
            raise ValueError(f"target must be a node name, got {target!r}")
        check_seed(seed)
        self.mechanisms = mechanisms
        self.target = target
        self.seed = seed

    def _targets(self, graph: CausalGraph) -> list[str]:
        return [self.target] if self.target else graph.targets

    def _setup(self, graph: CausalGraph, frames: list[pd.DataFrame], invertible: bool,
               target: str) -> tuple[Any, Any, list[pd.DataFrame]]:
        """DoWhy, the model of ``target``'s ancestors with its mechanisms, and ``frames``
        encoded for it."""
        gcm = _gcm()
        from dowhy.gcm.util.general import set_random_seed

        set_random_seed(self.seed)
        keep = nx.ancestors(graph.dag, target) | {target}
        nodes = [n for n in graph.nodes if n in keep]
        enc = fit_encoding(nodes, frames, graph.latency_nodes)
        data = [pd.DataFrame(np.nan_to_num(enc.encode(f)), columns=nodes) for f in frames]
        dag = nx.DiGraph(graph.dag.subgraph(nodes))
        model = (gcm.InvertibleStructuralCausalModel(dag) if invertible
                 else gcm.ProbabilisticCausalModel(dag))
        if self.mechanisms == "auto":
            gcm.auto.assign_causal_mechanisms(model, data[0])
        else:
            for node in nodes:
                model.set_causal_mechanism(
                    node, gcm.EmpiricalDistribution() if dag.in_degree(node) == 0
                    else gcm.AdditiveNoiseModel(gcm.ml.create_linear_regressor()))
        return gcm, model, data


class DoWhyShift(_DoWhy):
    name = "dowhy-shift"
    modes = frozenset({"shift"})

    def __init__(self, mechanisms: str = "linear", target: str | None = None,
                 num_samples: int = 2000, test: str = "kernel", test_samples: int | None = None,
                 seed: int = 0) -> None:
        super().__init__(mechanisms, target, seed)
        if test not in ("kernel", "approx"):
            raise ValueError("test must be 'kernel' (DoWhy's default) or 'approx'")
        _check_count("num_samples", num_samples)
        if test_samples is not None:
            _check_count("test_samples", test_samples)
        self.num_samples = num_samples
        self.test = test
        self.test_samples = test_samples

    def shift(self, graph: CausalGraph, reference: pd.DataFrame, incident: pd.DataFrame
              ) -> Ranking:
        targets = self._targets(graph)
        scores: dict[str, float] = {}
        evidence: dict[str, dict[str, Any]] = {}
        no_fault = True
        for target in targets:
            attributions, changed = self._attribute(graph, reference, incident, target)
            no_fault = no_fault and not any(changed.values())
            for n, v in attributions.items():
                if n not in scores or abs(float(v)) > scores[n]:
                    scores[n] = abs(float(v))
                    evidence[n] = {"attribution": float(v), "target": target,
                                   "mechanism_changed": bool(changed.get(n))}
        return Ranking(self.name, "shift", rank_steps(graph, scores, evidence),
                       no_fault=no_fault, details={"targets": targets})

    def _attribute(self, graph: CausalGraph, reference: pd.DataFrame, incident: pd.DataFrame,
                   target: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """DoWhy's attributions of ``target``'s change, and its mechanism-change flags."""
        gcm, model, (old, new) = self._setup(graph, [reference, incident], False, target)
        from dowhy.gcm.independence_test import approx_kernel_based, kernel_based

        test: Any = partial(approx_kernel_based, use_bootstrap=False)
        if self.test == "kernel":
            test = kernel_based if self.test_samples is None else partial(
                kernel_based, use_bootstrap=True, bootstrap_num_runs=KERNEL_RUNS,
                max_num_samples_run=self.test_samples)
        from dowhy.gcm.divergence import auto_estimate_kl_divergence

        def divergence(a: np.ndarray, b: np.ndarray) -> float:
            # DoWhy's estimator can return an int 0, which breaks its own Shapley sums
            return float(auto_estimate_kl_divergence(a, b))

        attributions, changed, _, _ = gcm.distribution_change(
            model, old, new, target, num_samples=self.num_samples, return_additional_info=True,
            difference_estimation_func=divergence, independence_test=test,
            conditional_independence_test=test)
        return attributions, changed


class DoWhyAnomaly(_DoWhy):
    name = "dowhy-anomaly"
    modes = frozenset({"anomaly"})

    def __init__(self, mechanisms: str = "linear", target: str | None = None,
                 num_distribution_samples: int = 3000, alpha: float = 0.01, seed: int = 0
                 ) -> None:
        super().__init__(mechanisms, target, seed)
        _check_count("num_distribution_samples", num_distribution_samples)
        check_alpha(alpha)
        self.num_distribution_samples = num_distribution_samples
        self.alpha = alpha

    def anomaly(self, graph: CausalGraph, reference: pd.DataFrame, request: pd.DataFrame
                ) -> Ranking:
        scores: dict[str, float] = {}
        totals: dict[str, float] = {}  # per target, its IT anomaly score
        for target in self._targets(graph):
            gcm, model, (ref, row) = self._setup(graph, [reference, request[:1]], True, target)
            gcm.fit(model, ref)
            attributions = gcm.attribute_anomalies(
                model, target, anomaly_samples=row,
                num_distribution_samples=self.num_distribution_samples)
            own = {n: float(np.asarray(v).reshape(-1)[0]) for n, v in attributions.items()}
            totals[target] = sum(own.values())
            for n, v in own.items():
                scores[n] = max(scores.get(n, v), v)
        level = float(-np.log(self.alpha))
        return Ranking(self.name, "anomaly", rank_steps(graph, scores),
                       no_fault=max(totals.values()) < level, threshold=level,
                       details={"targets": list(totals), "target_it_score": totals})
