"""Causal fault localisation: which step of a pipeline caused a shift or a bad request.

>>> ranking = localise("pipeline.yaml", reference, incident)          # doctest: +SKIP
>>> ranking.top.step, ranking.no_fault, ranking.to_json()             # doctest: +SKIP

``graph_or_spec`` is a :class:`CausalGraph`, or pipelines as :func:`engine.spec.load_pipelines`
accepts them (with ``layout`` when the frames are in a reference layout); frames are
trace-store frames or tables in that layout. See docs/causal.md.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pandas as pd

from causal.encoding import usable_columns
from causal.frames import (
    WindowError,
    check_nodes,
    check_numbers,
    check_rows,
    numbers_apart,
    without_infinities,
)
from causal.graph import CausalGraph, GraphError, NodeInfo, PipelineSource, build_graph
from causal.methods import METHODS, Method, UnsupportedMode
from causal.result import Candidate, Ranking

GraphOrSpec = CausalGraph | PipelineSource


def graph_for(graph_or_spec: GraphOrSpec, *frames: pd.DataFrame,
              layout: Mapping[str, str] | None = None) -> CausalGraph:
    """The causal graph over the usable columns of ``frames`` (unless one is given), with
    numbers and text apart as the rankings read them (:func:`causal.frames.numbers_apart`)."""
    if isinstance(graph_or_spec, CausalGraph):
        return graph_or_spec
    return _graph_over(graph_or_spec, numbers_apart(*frames), layout)


def _graph_over(graph_or_spec: GraphOrSpec, frames: tuple[pd.DataFrame, ...],
                layout: Mapping[str, str] | None) -> CausalGraph:
    """:func:`graph_for` on frames :func:`causal.frames.numbers_apart` has made already."""
    if isinstance(graph_or_spec, CausalGraph):
        return graph_or_spec
    columns = usable_columns(*frames)
    graph = build_graph(graph_or_spec, columns, layout)
    if not graph.nodes:
        shown = ", ".join(columns[:5]) + (", ..." if len(columns) > 5 else "")
        raise WindowError(f"none of the columns ({shown or 'none'}) are nodes of the pipeline "
                          f"(missing layout?)")
    return graph


def make_method(method: str, **opts: Any) -> Method:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return METHODS[method](**opts)


def localise(graph_or_spec: GraphOrSpec, reference: pd.DataFrame, incident: pd.DataFrame,
             method: str = "flowcause", *, layout: Mapping[str, str] | None = None,
             **opts: Any) -> Ranking:
    """Rank the steps that may have caused ``incident`` to differ from ``reference``."""
    check_rows(reference, "reference")
    check_rows(incident, "incident")
    reference, incident = numbers_apart(reference, incident)
    # ±inf is missing, in every window alike (causal.frames.without_infinities)
    reference, incident = without_infinities(reference), without_infinities(incident)
    graph = _graph_over(graph_or_spec, (reference, incident), layout)
    check_nodes(graph.nodes, {"reference": reference, "incident": incident})
    check_numbers(graph.nodes, {"reference": reference, "incident": incident})
    runner = make_method(method, **opts)
    start = time.perf_counter()
    ranking = runner.shift(graph, reference, incident)
    ranking.seconds = time.perf_counter() - start
    return ranking


def explain_request(graph_or_spec: GraphOrSpec, reference: pd.DataFrame,
                    request: pd.DataFrame | pd.Series, method: str = "flowcause", *,
                    layout: Mapping[str, str] | None = None, **opts: Any) -> Ranking:
    """Rank the steps that may have made one request (a row of a frame) go wrong."""
    # a row of a frame keeps its columns' types; a Series has lost them (to object), so they
    # are inferred again from its values
    row = (request.to_frame().T.infer_objects() if isinstance(request, pd.Series)
           else request.iloc[:1])
    check_rows(reference, "reference")
    check_rows(row, "request", 1)
    reference, row = numbers_apart(reference, row)
    reference, row = without_infinities(reference), without_infinities(row)
    graph = _graph_over(graph_or_spec, (reference, row), layout)
    check_nodes(graph.nodes, {"reference": reference, "request": row})
    check_numbers(graph.nodes, {"reference": reference, "request": row})
    runner = make_method(method, **opts)
    start = time.perf_counter()
    ranking = runner.anomaly(graph, reference, row)
    ranking.seconds = time.perf_counter() - start
    return ranking


__all__ = ["METHODS", "Candidate", "CausalGraph", "GraphError", "Method", "NodeInfo", "Ranking",
           "UnsupportedMode", "WindowError", "build_graph", "explain_request", "graph_for", "localise"]
