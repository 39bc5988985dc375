"""Synthetic pipelines with a known faulty step, for tests and ``make bench-causal``.

A random Seldon ``Pipeline`` spec whose steps consume one to three recent nodes, and traffic
in trace-store columns (``synth.inputs.x0``, ``s7.outputs.y``, ...). Steps are:

- *linear* or *nonlinear* (tanh, absolute value) functions of their inputs, half of them
  exact, half with noise;
- *routers* emitting ``a`` (1.0) when a linear score is positive and ``b`` otherwise (the
  other tensor is absent, NaN, as in the trace store);
- *triggered* steps that run only when a router output is present; their outputs are
  consumed only by the last step.

A step with an absent input does not run (inner join). The last step adds up to ten recent
sink nodes, absent ones counting 0 (``inputsJoinType: any``), into the pipeline output
``synth.outputs.y``. An incident injects one fault, in
an ancestor of the output: a shifted pipeline input, an offset or a flipped weight in a
step, or a moved router threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

PIPELINE = "synth"
MAX_PARENTS = 3
RECENT = 30
OUTPUT_FANIN = 10


@dataclass
class SynthStep:
    name: str
    kind: str  # linear, tanh, abs, router, triggered, output
    inputs: list[str]
    weights: np.ndarray
    noise: float
    trigger: str | None = None
    outputs: list[str] = field(default_factory=list)


@dataclass
class Fault:
    step: str
    node: str
    kind: str  # input-shift, offset, weight, threshold
    size: float


@dataclass
class SyntheticPipeline:
    roots: list[str]
    steps: list[SynthStep]

    @property
    def spec(self) -> dict[str, Any]:
        steps = []
        for s in self.steps[:-1]:
            doc: dict[str, Any] = {"name": s.name, "inputs": list(s.inputs)}
            if s.trigger:
                doc["triggers"] = [s.trigger]
            steps.append(doc)
        steps.append({"name": self.steps[-1].name, "inputs": list(self.steps[-1].inputs),
                      "inputsJoinType": "any"})
        return {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Pipeline",
                "metadata": {"name": PIPELINE},
                "spec": {"steps": steps, "output": {"steps": [self.steps[-1].name]}}}

    def sample(self, n: int, rng: np.random.Generator, fault: Fault | None = None
               ) -> pd.DataFrame:
        cols: dict[str, np.ndarray] = {}
        for root in self.roots:
            cols[root] = rng.normal(size=n) + (
                fault.size if fault and fault.kind == "input-shift" and fault.node == root else 0)
        for s in self.steps:
            x = np.column_stack([cols[i] for i in s.inputs])
            runs = ~np.isnan(x).any(axis=1) | (s.kind == "output")
            if s.trigger:
                runs &= ~np.isnan(cols[s.trigger])
            w = s.weights.copy()
            mine = fault is not None and fault.step == s.name
            if mine and fault.kind == "weight":
                w[0] = -w[0]
            score = np.nan_to_num(x) @ w / np.sqrt(len(w))
            if s.kind == "router":
                cut = fault.size if mine and fault.kind == "threshold" else 0.0
                high = score > cut
                cols[s.outputs[0]] = np.where(runs & high, 1.0, np.nan)
                cols[s.outputs[1]] = np.where(runs & ~high, 1.0, np.nan)
                continue
            if s.kind == "tanh":
                score = 2 * np.tanh(score / 2)
            elif s.kind == "abs":
                score = np.abs(score) - 0.8
            y = score + s.noise * rng.normal(size=n)
            if mine and fault.kind == "offset":
                y = y + fault.size
            cols[s.outputs[0]] = np.where(runs, y, np.nan)
        cols[f"{PIPELINE}.outputs.y"] = cols[self.steps[-1].outputs[0]]
        frame = pd.DataFrame(cols)
        frame.index = pd.Index([f"r{i}" for i in range(n)], name="request_id")
        return frame

    def dag(self) -> nx.DiGraph:
        g = nx.DiGraph()
        for s in self.steps:
            for out in s.outputs:
                g.add_edges_from((p, out) for p in [*s.inputs, *([s.trigger] if s.trigger else [])])
        g.add_edge(self.steps[-1].outputs[0], f"{PIPELINE}.outputs.y")
        return g


def synthetic_pipeline(n_nodes: int, rng: np.random.Generator) -> SyntheticPipeline:
    """A random pipeline with about ``n_nodes`` columns (inputs, step outputs, output)."""
    n_roots = max(2, n_nodes // 20)
    roots = [f"{PIPELINE}.inputs.x{i}" for i in range(n_roots)]
    numeric: list[str] = list(roots)  # continuous nodes a step may consume
    routes: list[str] = []
    branches: list[str] = []  # outputs of triggered steps: absent when not triggered
    steps: list[SynthStep] = []
    count = n_roots + 2  # the output step and the pipeline output
    while count < n_nodes:
        name = f"s{len(steps)}"
        kind = rng.choice(["linear", "tanh", "abs", "router", "triggered"],
                          p=[0.55, 0.1, 0.1, 0.1, 0.15])
        if kind == "triggered" and not routes:
            kind = "linear"
        if kind == "router" and count + 2 > n_nodes:
            kind = "linear"
        k = int(rng.integers(1, MAX_PARENTS + 1))
        recent = numeric[-RECENT:]
        inputs = list(rng.choice(recent, size=min(k, len(recent)), replace=False))
        weights = rng.choice([-1.0, 1.0], size=len(inputs)) * rng.uniform(0.5, 1.0, len(inputs))
        noise = float(rng.choice([0.0, 0.3]))
        trigger = str(rng.choice(routes[-RECENT:])) if kind == "triggered" else None
        if kind == "router":
            outputs = [f"{name}.outputs.a", f"{name}.outputs.b"]
            routes += outputs
        else:
            outputs = [f"{name}.outputs.y"]
            (branches if kind == "triggered" else numeric).append(outputs[0])
        steps.append(SynthStep(name, str(kind), [str(i) for i in inputs], weights, noise,
                               trigger, outputs))
        count += len(outputs)
    consumed = {i for s in steps for i in [*s.inputs, *([s.trigger] if s.trigger else [])]}
    sinks = [c for c in numeric + branches if c not in consumed and c not in roots]
    sinks = sorted(sinks, key=lambda c: int(c.split(".")[0][1:]))[-OUTPUT_FANIN:]
    sinks = sinks or numeric[-1:]
    steps.append(SynthStep("final", "output", sinks, np.ones(len(sinks)), 0.0,
                           outputs=["final.outputs.y"]))
    return SyntheticPipeline(roots, steps)


@dataclass
class Incident:
    pipeline: SyntheticPipeline
    reference: pd.DataFrame
    incident: pd.DataFrame
    fault: Fault


def make_incident(n_nodes: int, seed: int, rows: int = 500) -> Incident:
    """A pipeline of about ``n_nodes`` nodes, a reference window and an incident window with
    one fault in an ancestor of the output, large enough to move that node's distribution."""
    rng = np.random.default_rng(seed)
    pipe = synthetic_pipeline(n_nodes, rng)
    reference = pipe.sample(rows, rng)
    ancestors = nx.ancestors(pipe.dag(), f"{PIPELINE}.outputs.y")
    owners = {out: s for s in pipe.steps[:-1] for out in s.outputs}
    choices = sorted(n for n in ancestors if n in pipe.roots or n in owners)
    node = str(rng.choice(choices))
    if node in pipe.roots:
        fault = Fault(PIPELINE, node, "input-shift", 1.0)
    else:
        step = owners[node]
        if step.kind == "router":
            fault = Fault(step.name, node, "threshold", 0.5)
        elif rng.random() < 0.5 and len(step.inputs) > 1:
            fault = Fault(step.name, node, "weight", 0.0)
        else:
            fault = Fault(step.name, node, "offset", float(np.nanstd(reference[node])))
    return Incident(pipe, reference, pipe.sample(rows, rng, fault), fault)
