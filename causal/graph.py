"""The causal graph of one or more pipelines, read off their specs.

A dataflow pipeline is a complete causal graph: a step's outputs are caused by what the step
consumes and by its own code, nothing else. Nodes are the columns of a trace-store frame
(docs/trace-store.md) that the spec can place:

- ``<pipeline>.inputs.<tensor>``: roots, unless another pipeline feeds them (chaining);
- ``<step>.outputs.<tensor>`` (and vector summaries such as ``<ref>.mean``), ``<step>.ran``
  when the step can be skipped (it has triggers or consumes another step's outputs, which
  a router may withhold), ``<step>.latency_ms`` and ``<step>.status``: their parents are
  every node the step consumes, inputs and triggers alike;
- ``<pipeline>.outputs.<tensor>``: parents are the output steps' tensors of that name.

The spec does not declare a step's output tensors, so the builder takes the frame's columns
as well. A *layout* (column name -> reference, as in ``causal/layouts/*.yaml``) renames
nodes to another table's columns, such as the published insurance-claims CSVs.

Every node belongs to a *step*, the unit a fault is reported against: its step, the pipeline
name for a pipeline's inputs (a bare pipeline name means its inputs in the reference
grammar) and ``<pipeline>.outputs`` for its outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import networkx as nx

from engine.refs import Ref, parse_ref
from engine.spec import Pipeline, Step, load_pipelines

Role = Literal["input", "output", "tensor", "ran", "latency", "status"]
STEP_FIELDS: dict[str, Role] = {"ran": "ran", "latency_ms": "latency", "status": "status"}
PipelineSource = str | Path | Mapping[str, Any] | Iterable[Any]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a graph node stands for: its reference (frame column), step and role."""

    ref: str
    step: str
    pipeline: str
    role: Role


class GraphError(ValueError):
    """Pipelines that give no causal graph: a cycle (``allowCycles``), a step name used in
    two chained pipelines, a spec that does not validate (:func:`spec_problems`)."""


def spec_problems(pipelines: Iterable[Pipeline]) -> list[str]:
    """What keeps ``pipelines`` from being localised, as ``flowcause validate`` reports it
    (:func:`engine.validate.validate`: file and line, pipeline, step, reference), and a
    cycle among a pipeline's steps, which ``allowCycles`` lets the engine run but leaves no
    causal order. Empty when there is nothing."""
    from engine.validate import step_cycle, validate

    pipelines = list(pipelines)
    problems = validate(pipelines)
    if problems:
        return problems
    for p in pipelines:
        cycle = step_cycle(p)
        if cycle is not None:
            problems.append(f"{p.where('spec', 'steps')}: pipeline {p.name!r} has a cycle "
                            f"({' -> '.join(cycle)}); cyclic pipelines (allowCycles) cannot be "
                            "localised")
    return problems


class CausalGraph:
    """A DAG over node names with, per node, its :class:`NodeInfo`."""

    def __init__(self, dag: nx.DiGraph, info: Mapping[str, NodeInfo]) -> None:
        if not nx.is_directed_acyclic_graph(dag):
            cycle = nx.find_cycle(dag)
            raise GraphError(f"the causal graph has a cycle: {cycle}; cyclic pipelines "
                             "(allowCycles) cannot be localised")
        self.dag = dag
        self.info = dict(info)
        self._rank = {n: i for i, n in enumerate(self.info)}  # order of discovery: the spec's
        self.nodes: list[str] = list(nx.lexicographical_topological_sort(dag, key=self._order))
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.parents: dict[str, list[str]] = {
            n: sorted(dag.predecessors(n), key=self._order) for n in self.nodes
        }

    def _order(self, node: str) -> tuple[int, str]:
        return (self._rank.get(node, len(self._rank)), node)

    def step(self, node: str) -> str:
        return self.info[node].step

    @property
    def targets(self) -> list[str]:
        """The pipeline outputs (the last pipeline's, when chained), else the sinks."""
        outputs = [n for n in self.nodes if self.info[n].role == "output"]
        if outputs:
            last = outputs[-1]
            return [n for n in outputs if self.info[n].pipeline == self.info[last].pipeline]
        return [n for n in self.nodes if self.dag.out_degree(n) == 0]

    @property
    def latency_nodes(self) -> list[str]:
        return [n for n in self.nodes if self.info[n].role == "latency"]

    def edges(self) -> set[tuple[str, str]]:
        return set(self.dag.edges)


def _columns_of(owner: str, port: str, present: Iterable[str]) -> dict[str, list[str]]:
    """Columns ``owner.port.T[.stat]`` grouped by tensor ``T``."""
    prefix = f"{owner}.{port}."
    out: dict[str, list[str]] = {}
    for col in present:
        if col.startswith(prefix):
            tensor = col[len(prefix):].split(".", 1)[0]
            out.setdefault(tensor, []).append(col)
    return out


class _Builder:
    def __init__(self, pipelines: list[Pipeline], present: list[str]) -> None:
        self.pipelines = {p.name: p for p in pipelines}
        self.present = present
        self.info: dict[str, NodeInfo] = {}
        self.dag = nx.DiGraph()
        step_owner: dict[str, str] = {}
        for p in pipelines:
            for s in p.steps:
                if step_owner.setdefault(s.name, p.name) != p.name:
                    raise GraphError(f"step {s.name!r} is in pipelines {step_owner[s.name]!r} and "
                                     f"{p.name!r}; trace-store columns cannot tell them apart")

    def tensors(self, ref: Ref) -> dict[str, list[str]]:
        """Columns of the tensors a resolved reference stands for, keyed by tensor name."""
        if ref.step is not None and ref.port == "inputs":
            pipeline = self.pipelines.get(ref.pipeline)
            if pipeline is None:
                return {}
            consumed = self.consumed(pipeline, pipeline.step(ref.step))
        else:
            owner = ref.step if ref.step is not None else ref.pipeline
            consumed = _columns_of(owner, ref.port, self.present)
        if ref.tensor is None:
            return consumed
        return {ref.tensor: consumed[ref.tensor]} if ref.tensor in consumed else {}

    def _picked(self, pipeline: Pipeline, texts: Iterable[str], tensor_map: Mapping[str, str],
                external: bool) -> dict[str, list[str]]:
        """Columns of the given references, keyed by the name each tensor gets on arrival."""
        renames: dict[Ref, dict[str, str]] = {}
        for key, new in tensor_map.items():
            ref = parse_ref(key, pipeline, external=external)
            renames.setdefault(ref.whole(), {})[ref.tensor or ""] = new
        out: dict[str, list[str]] = {}
        for text in texts:
            ref = parse_ref(text, pipeline, external=external)
            for tensor, cols in self.tensors(ref).items():
                local = renames.get(ref.whole(), {}).get(tensor, tensor)
                out.setdefault(local, []).extend(c for c in cols if c not in out.get(local, []))
        return out

    def consumed(self, pipeline: Pipeline, step: Step) -> dict[str, list[str]]:
        inputs = step.inputs or [f"{pipeline.name}.inputs"]
        return self._picked(pipeline, [*inputs, *step.triggers], step.tensor_map, external=False)

    def add(self, column: str, info: NodeInfo, parents: Iterable[str]) -> None:
        self.info[column] = info
        self.dag.add_node(column)
        self.dag.add_edges_from((p, column) for p in parents if p != column)

    def build(self) -> CausalGraph:
        for p in self.pipelines.values():
            feeds: dict[str, list[str]] = {}
            triggers: list[str] = []
            if p.input is not None:
                feeds = self._picked(p, p.input.external_inputs, p.input.tensor_map, external=True)
                triggers = [c for cols in self._picked(p, p.input.external_triggers, {},
                                                       external=True).values() for c in cols]
            for tensor, cols in _columns_of(p.name, "inputs", self.present).items():
                for col in cols:
                    self.add(col, NodeInfo(col, p.name, p.name, "input"),
                             [*feeds.get(tensor, []), *triggers])
            for s in p.steps:
                consumed = self.consumed(p, s)
                parents = [c for cols in consumed.values() for c in cols]
                skippable = bool(s.triggers) or any(
                    parse_ref(t, p).step is not None for t in s.inputs)
                for field, role in STEP_FIELDS.items():
                    col = f"{s.name}.{field}"
                    if col in self.present and (role != "ran" or skippable):
                        self.add(col, NodeInfo(col, s.name, p.name, role), parents)
                for cols in _columns_of(s.name, "outputs", self.present).values():
                    for col in cols:
                        self.add(col, NodeInfo(col, s.name, p.name, "tensor"), parents)
            out_steps = (p.output.steps if p.output and p.output.steps
                         else [s.name for s in p.steps if not self._consumers(p, s.name)])
            sources = self._picked(p, out_steps, p.output.tensor_map if p.output else {},
                                   external=False)
            every = [c for cols in sources.values() for c in cols]
            for tensor, cols in _columns_of(p.name, "outputs", self.present).items():
                for col in cols:
                    self.add(col, NodeInfo(col, f"{p.name}.outputs", p.name, "output"),
                             sources.get(tensor, every))
        missing = [n for n in self.dag.nodes if n not in self.info]
        self.dag.remove_nodes_from(missing)  # parents whose columns belong to no known node
        return CausalGraph(self.dag, self.info)

    @staticmethod
    def _consumers(pipeline: Pipeline, step: str) -> bool:
        return any(parse_ref(t, pipeline).step == step
                   for s in pipeline.steps for t in [*s.inputs, *s.triggers])


def build_graph(pipelines: PipelineSource | list[Pipeline], columns: Iterable[str],
                layout: Mapping[str, str] | None = None) -> CausalGraph:
    """The causal graph of ``pipelines`` (chained ones joined) over the frame ``columns``.

    With ``layout`` (column name -> reference) the columns are a table in that layout: the
    graph is built over the references and its nodes take the layout's column names.
    """
    specs = (list(pipelines) if isinstance(pipelines, list)
             and all(isinstance(p, Pipeline) for p in pipelines)
             else load_pipelines(pipelines))  # type: ignore[arg-type]
    columns = list(columns)
    if layout is None:
        return _Builder(specs, columns).build()
    to_name: dict[str, str] = {}
    for name, ref in layout.items():
        if name in columns:
            if ref in to_name:
                raise GraphError(f"layout maps both {to_name[ref]!r} and {name!r} to {ref!r}")
            to_name[ref] = name
    graph = _Builder(specs, list(to_name)).build()
    dag = nx.relabel_nodes(graph.dag, to_name)
    info = {to_name[ref]: i for ref, i in graph.info.items()}
    return CausalGraph(dag, info)
