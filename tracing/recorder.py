"""The trace-store sink: what the engine did, as the store's two tables.

Every step decision becomes a node row (skipped steps too: that is how a branch not taken is
recorded as absent), every record on a pipeline's ``inputs``/``outputs`` topic a node row of
kind ``inputs``/``outputs``; each of their tensors becomes a tensor row (step inputs with
direction ``inputs``, step outputs with ``outputs``, a pipeline record's tensors with the
port as direction), kept whole or summarised per :mod:`tracing.summary`.

The work is split in two. :meth:`StoreRecorder.consume` (on the engine's event loop, a batch
at a time) only copies what it needs out of the events into plain column lists: strings,
numbers and the tensors' numpy arrays, none of which the garbage collector scans, so the
engine's event, record and tensor objects die at once. A tensor object seen several times
in a batch (a step's input is usually an upstream output or a pipeline input, passed on as
is) is kept once. :meth:`StoreRecorder.flush` (the collector's flusher thread, every
``flush_seconds``) builds the Arrow tables from everything gathered since the last flush,
summarises the tensors in one vectorised pass, and commits one batch of files
(:mod:`tracing.files`): per-call costs of Arrow and numpy are paid once per flush, not once
per event batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from engine.observe import StepEvent
from engine.tensors import Tensor
from tracing.collector import Item, PortEvent
from tracing.files import NODE_SCHEMA, TENSOR_SCHEMA, write_batch
from tracing.summary import DEFAULT_MAX_VALUES, summarise

RAN = ("ok", "error")
NODE_LISTS = ("request_id", "pipeline", "kind", "node", "generation", "status", "batch_size",
              "error", "parents", "trace_id", "span_id", "parent_span_ids")


def _timestamps(ns: np.ndarray) -> pa.Array:
    """Nanoseconds since the epoch as UTC timestamps; 0 (unknown) becomes null."""
    return pa.array(ns, type=pa.int64(), mask=ns == 0).cast(NODE_SCHEMA.field("time").type)


@dataclass
class _Gathered:
    """What :meth:`StoreRecorder.consume` copied out of the events since the last flush."""

    nodes: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in NODE_LISTS})
    received: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    ran: list[bool] = field(default_factory=list)
    owner: list[np.ndarray] = field(default_factory=list)  # tensor row -> node row
    direction: list[np.ndarray] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    copy_of: list[np.ndarray] = field(default_factory=list)  # tensor row -> distinct tensor
    datatype: list[str] = field(default_factory=list)  # per distinct tensor
    data: list[np.ndarray] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.received)


class StoreRecorder:
    """Writes what the engine did into a :class:`tracing.store.TraceStore` directory."""

    def __init__(self, path: str | Path, max_values: int = DEFAULT_MAX_VALUES) -> None:
        self.root = Path(path)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_values = max_values
        self._gathered = _Gathered()
        self._lock = threading.Lock()  # consume (event loop) against flush (flusher thread)

    def consume(self, items: list[Item]) -> None:
        steps = [i for i in items if type(i) is StepEvent]
        ports = [i for i in items if type(i) is PortEvent]
        lineages = [e.lineage for e in steps] + [p.record.lineage for p in ports]
        n_ports = len(ports)
        port_times = [p.time_ns for p in ports]
        groups = ([e.inputs for e in steps] + [e.outputs for e in steps]
                  + [p.record.tensors for p in ports])
        flat: list[Tensor] = [t for g in groups for t in g]
        distinct: dict[int, int] = {}
        copy_of = [distinct.setdefault(id(t), len(distinct)) for t in flat]
        firsts = list({id(t): t for t in flat}.values())  # dict keeps first-seen order
        counts = [len(g) for g in groups]
        labels = np.array(["inputs"] * len(steps) + ["outputs"] * len(steps)
                          + [p.port for p in ports], dtype=object)
        node_rows = np.arange(len(lineages))
        with self._lock:
            g = self._gathered
            nodes, base, tensor_base = g.nodes, g.rows, len(g.data)
            nodes["request_id"] += [lin.request_id for lin in lineages]
            nodes["pipeline"] += [e.pipeline for e in steps] + [p.pipeline for p in ports]
            nodes["kind"] += ["step"] * len(steps) + [p.port for p in ports]
            nodes["node"] += [e.step for e in steps] + [p.port for p in ports]
            nodes["generation"] += [lin.generation for lin in lineages]
            nodes["status"] += [e.status for e in steps] + ["ok"] * n_ports
            nodes["batch_size"] += [e.batch_size for e in steps] + [1] * n_ports
            nodes["error"] += [e.error for e in steps] + [None] * n_ports
            nodes["parents"] += [lin.parents for lin in lineages]
            nodes["trace_id"] += [lin.trace_id for lin in lineages]
            # a skipped step has no span of its own (its lineage repeats the upstream span)
            nodes["span_id"] += [None if e.status == "skipped" else e.lineage.span_id
                                 for e in steps] + [p.record.lineage.span_id for p in ports]
            nodes["parent_span_ids"] += [e.parent_span_ids for e in steps] + [None] * n_ports
            g.received += [e.received_ns for e in steps] + port_times
            g.started += [e.started_ns for e in steps] + port_times
            g.finished += [e.finished_ns for e in steps] + port_times
            g.ran += [e.status in RAN and e.started_ns > 0 for e in steps] + [False] * n_ports
            g.owner.append(base + np.repeat(np.concatenate([node_rows[:len(steps)],
                                                            node_rows]), counts))
            g.direction.append(np.repeat(labels, counts))
            g.name += [t.name for t in flat]
            g.copy_of.append(tensor_base + np.asarray(copy_of, np.int64))
            g.datatype += [t.datatype for t in firsts]
            g.data += [t.data for t in firsts]

    def flush(self) -> None:
        """Commit everything consumed since the last flush as one batch of files."""
        with self._lock:
            g, self._gathered = self._gathered, _Gathered()
        if not g.rows:
            return
        received, started, finished = (np.asarray(x, np.int64)
                                       for x in (g.received, g.started, g.finished))
        nodes = pa.table({
            **g.nodes,
            "time": _timestamps(np.where(received > 0, received, finished)),
            "received": _timestamps(received),
            "started": _timestamps(started),
            "finished": _timestamps(finished),
            "latency_ms": pa.array((finished - started) / 1e6, mask=~np.asarray(g.ran, bool)),
        }, schema=NODE_SCHEMA)
        owner = np.concatenate(g.owner)
        keys = nodes.select(["request_id", "pipeline", "kind", "node", "generation"]).take(owner)
        described = pa.table(summarise(g.datatype, g.data, self.max_values)).take(
            np.concatenate(g.copy_of))
        tensors = pa.table({
            **dict(zip(keys.column_names, keys.columns, strict=True)),
            "direction": pa.array(np.concatenate(g.direction), pa.string()),
            "name": pa.array(g.name, pa.string()),
            **dict(zip(described.column_names, described.columns, strict=True)),
        }, schema=TENSOR_SCHEMA)
        write_batch(self.root, nodes, tensors, owner)

    def close(self) -> None:
        self.flush()
