"""The trace-store sink: what the engine did, as the store's two tables.

Every step decision becomes a node row (skipped steps too: that is how a branch not taken is
recorded as absent), every record on a pipeline's ``inputs``/``outputs`` topic a node row of
kind ``inputs``/``outputs``; each of their tensors becomes a tensor row (step inputs with
direction ``inputs``, step outputs with ``outputs``, a pipeline record's tensors with the
port as direction), kept whole or summarised per :mod:`tracing.summary`.

The work is split in two. :meth:`StoreRecorder.consume` (where the collector hands over a
batch of event columns, :mod:`tracing.events`) only appends what it needs to plain column
lists: strings, numbers and the tensors' numpy arrays, none of which the garbage collector
scans, so the engine's record and tensor objects die at once. A tensor object seen several
times in a batch (a step's input is usually an upstream output or a pipeline input, passed
on as is) is kept once. :meth:`StoreRecorder.flush` (the collector's flusher thread, every
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

from engine.tensors import Tensor
from tracing.events import EventBatch
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

    def consume(self, batch: EventBatch) -> None:
        steps, ports = batch.steps, batch.ports
        n_steps, n_ports = len(steps["step"]), len(ports["port"])
        port_times = ports["time_ns"]
        groups = steps["inputs"] + steps["outputs"] + ports["tensors"]
        flat: list[Tensor] = [t for g in groups for t in g]
        distinct: dict[int, int] = {}
        copy_of = [distinct.setdefault(id(t), len(distinct)) for t in flat]
        firsts = list({id(t): t for t in flat}.values())  # dict keeps first-seen order
        counts = [len(g) for g in groups]
        labels = np.array(["inputs"] * n_steps + ["outputs"] * n_steps + ports["port"],
                          dtype=object)
        node_rows = np.arange(n_steps + n_ports)
        statuses = steps["status"]
        with self._lock:
            g = self._gathered
            nodes, base, tensor_base = g.nodes, g.rows, len(g.data)
            for column in ("request_id", "pipeline", "generation", "parents", "trace_id"):
                nodes[column] += steps[column] + ports[column]
            nodes["kind"] += ["step"] * n_steps + ports["port"]
            nodes["node"] += steps["step"] + ports["port"]
            nodes["status"] += statuses + ["ok"] * n_ports
            nodes["batch_size"] += steps["batch_size"] + [1] * n_ports
            nodes["error"] += steps["error"] + [None] * n_ports
            # a skipped step has no span of its own (its lineage repeats the upstream span)
            nodes["span_id"] += [None if status == "skipped" else span for status, span
                                 in zip(statuses, steps["span_id"], strict=True)]
            nodes["span_id"] += ports["span_id"]
            nodes["parent_span_ids"] += steps["parent_span_ids"] + [None] * n_ports
            g.received += steps["received_ns"] + port_times
            g.started += steps["started_ns"] + port_times
            g.finished += steps["finished_ns"] + port_times
            g.ran += [status in RAN and started > 0 for status, started
                      in zip(statuses, steps["started_ns"], strict=True)] + [False] * n_ports
            g.owner.append(base + np.repeat(np.concatenate([node_rows[:n_steps], node_rows]),
                                            counts))
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
