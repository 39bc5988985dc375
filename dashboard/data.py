"""The two sets of requests a report compares, from a trace store or from reference CSVs.

A trace store gives frames with columns named by references (:mod:`tracing.frame`); CSV
files keep their own column names, and the layout (column name -> reference,
``tracing.layout``) goes with them to the causal module. CSV rows carry no time, status or
latency, so their reports have no timeline and no lineage.

Chained pipelines (one pipeline's inputs fed by another's outputs) are compared together:
the window selects requests of the *target* pipeline (by default where traffic enters) and
the frames of the other pipelines chained with it join on the request id, which stays the
same along the chain; pipelines not chained with the target are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dashboard.windows import Window
from engine.refs import parse_ref
from engine.spec import Pipeline
from engine.validate import step_cycle
from tracing.files import not_a_store
from tracing.store import TraceStore

# the fewest requests of a window the ranking handles (causal.frames.MIN_ROWS, not imported
# here: the causal package is slow to import and every flowcause command loads this module)
MIN_REQUESTS = 2


@dataclass
class Comparison:
    pipelines: list[Pipeline]  # every pipeline compared, in spec order
    target: str
    reference: pd.DataFrame
    incident: pd.DataFrame
    source: dict[str, Any] = field(default_factory=dict)  # what was read, for the report
    store: TraceStore | None = None
    layout: dict[str, str] | None = None  # column name -> reference, for tables in a layout


class CyclicPipeline(ValueError):
    """Pipelines the ranking refuses: one has a loop (``allowCycles``)."""


def cyclic_problem(pipelines: Sequence[Pipeline]) -> str | None:
    """Why ``pipelines`` cannot be ranked because of a loop; None if none has one.

    The causal ranking needs an acyclic graph: on a pipeline with a loop it would fail when
    the data shows the loop and rank on a wrong graph when it does not, so it is refused
    from the spec (a cycle among its steps, as ``flowcause localise`` refuses it; an
    ``allowCycles: true`` without one is no loop), whatever the data."""
    loops = [p.name for p in pipelines if p.spec.allow_cycles and step_cycle(p) is not None]
    if not loops:
        return None
    several = len(loops) > 1
    names = ", ".join(repr(name) for name in loops)
    return (f"cannot rank root causes: pipeline{'s' * several} {names} allow{'s' * (not several)} "
            f"cycles (allowCycles), and the causal ranking needs an acyclic pipeline")


def _refuse_cycles(pipelines: Sequence[Pipeline]) -> None:
    problem = cyclic_problem(pipelines)
    if problem:
        raise CyclicPipeline(problem)


def choose_target(pipelines: Sequence[Pipeline], name: str | None = None) -> str:
    """``name``, else the only pipeline, else the only one not fed by another pipeline."""
    names = [p.name for p in pipelines]
    if name is not None:
        if name not in names:
            raise ValueError(f"no pipeline {name!r} among {', '.join(names) or 'none'}")
        return name
    entries = [p.name for p in pipelines if p.input is None]
    if len(names) == 1 or len(entries) == 1:
        return names[0] if len(names) == 1 else entries[0]
    raise ValueError(f"several pipelines ({', '.join(names)}): choose the target pipeline by name")


def chained_with(pipelines: Sequence[Pipeline], target: str) -> list[Pipeline]:
    """The pipelines of ``pipelines`` chained with ``target``: feeding it or fed by it
    (``spec.input.externalInputs``/``externalTriggers``), directly or through others, in their
    order, ``target`` among them. Others a store holds are other traffic: their request ids
    may be the same strings without being the same requests."""
    linked: dict[str, set[str]] = {p.name: set() for p in pipelines}
    for p in pipelines:
        if p.input is not None:
            for text in [*p.input.external_inputs, *p.input.external_triggers]:
                source = parse_ref(text, p, external=True).pipeline
                linked.setdefault(source, set()).add(p.name)
                linked[p.name].add(source)
    chained, todo = {target}, [target]
    while todo:
        for name in linked.get(todo.pop(), ()):
            if name not in chained:
                chained.add(name)
                todo.append(name)
    return [p for p in pipelines if p.name in chained]


def window_frame(store: TraceStore, pipelines: Sequence[Pipeline], target: str, window: Window
                 ) -> pd.DataFrame:
    first = window.select(store, target)
    others = [p for p in pipelines if p.name != target]
    if not others or first.empty:
        return first
    # read whole: a pipeline upstream of the target saw the window's requests before it did
    return first.join([store.frame(p.name).drop(columns="time") for p in others], how="left")


def _window_summary(window: Window, frame: pd.DataFrame) -> dict[str, Any]:
    times = frame["time"] if len(frame) else None
    return {"window": window.text, "requests": len(frame),
            "first": times.min().isoformat() if times is not None else None,
            "last": times.max().isoformat() if times is not None else None}


def too_few(name: str, requests: int) -> str | None:
    """Why the ``name`` window of ``requests`` requests cannot be ranked; None if it can."""
    if requests >= MIN_REQUESTS:
        return None
    held = f"{requests} request{'s' * (requests != 1)}" if requests else "no requests"
    return f"the {name} window holds {held}; at least {MIN_REQUESTS} are needed"


def from_store(store: TraceStore, pipelines: Sequence[Pipeline], reference: Window, incident: Window,
               target: str | None = None) -> Comparison:
    """The windows of ``store``; of ``pipelines`` only those the store holds and that are
    chained with the target (:func:`chained_with`) count. Raises :class:`CyclicPipeline`
    (before reading) when one of those may loop."""
    held = set(store.pipelines())
    traced = [p for p in pipelines if p.name in held]
    if not held:
        raise ValueError(not_a_store(store.root) or
                         f"the store at {store.root} holds no pipelines (no committed batches)")
    if not traced:
        raise ValueError(f"the store at {store.root} holds none of the pipelines "
                         f"{', '.join(p.name for p in pipelines)} (it holds {', '.join(sorted(held))})")
    target = choose_target(traced, target)
    traced = chained_with(traced, target)
    _refuse_cycles(traced)
    ref = window_frame(store, traced, target, reference)
    inc = window_frame(store, traced, target, incident)
    source = {"kind": "trace store", "store": str(store.root), "pipelines": [p.name for p in traced],
              "target": target, "reference": _window_summary(reference, ref),
              "incident": _window_summary(incident, inc)}
    return Comparison(traced, target, ref, inc, source, store)


def from_csv(pipeline: Pipeline, reference: str | Path, incident: str | Path,
             layout: Mapping[str, str], layout_file: str | None = None) -> Comparison:
    """Two tables in a reference layout; their rows are indexed ``row<N>``."""
    _refuse_cycles([pipeline])
    frames = []
    for path in (reference, incident):
        table = pd.read_csv(path)
        missing = [c for c in layout if c not in table.columns]
        if missing:
            raise ValueError(f"{path}: the layout's columns {missing} are not in the file")
        table.index = pd.Index([f"row{i}" for i in range(len(table))], name="request_id")
        frames.append(table)
    source = {"kind": "reference CSVs", "layout": layout_file,
              "reference": {"file": str(reference), "requests": len(frames[0])},
              "incident": {"file": str(incident), "requests": len(frames[1])}}
    return Comparison([pipeline], pipeline.name, frames[0], frames[1], source, layout=dict(layout))
