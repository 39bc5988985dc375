"""The trace-store sink: what the engine did, as the store's two tables.

Every step decision becomes a node row (skipped steps too: that is how a branch not taken is
recorded as absent), every record on a pipeline's ``inputs``/``outputs`` topic a node row of
kind ``inputs``/``outputs``; each of their tensors becomes a tensor row (step inputs with
direction ``inputs``, step outputs with ``outputs``, a pipeline record's tensors with the
port as direction), kept whole or summarised per :mod:`tracing.summary`.

The work is split in two. :meth:`StoreRecorder.consume` (where the collector hands over a
batch of event columns, :mod:`tracing.events`) only appends what it needs to plain column
lists: strings, numbers and the tensors' numpy arrays, none of which the garbage collector
scans, so the engine's record and tensor objects die at once. :meth:`StoreRecorder.flush`
(the collector's flusher thread, every ``flush_seconds``) builds the Arrow tables from
everything gathered since the last flush, summarises the tensors in one vectorised pass, and
commits one batch of files (:mod:`tracing.files`): per-call costs of Arrow and numpy are
paid once per flush, not once per event batch.

``consume`` runs no Python code per event or per tensor: it extends the lists with list
arithmetic and ``map`` over the batch's columns, and reads the tensors' arrays there, while
they are likely still in the CPU caches (:class:`tracing.summary.TensorBatch`); everything
derived per row (a tensor row's node row and direction, a node's kind, which steps ran, the
span of a skipped step) is left to numpy and Arrow in ``flush``. A tensor seen several times
(a step's input is usually an upstream output or a pipeline input, passed on as is) is read
again for each of its rows: for size-1 tensors that costs less than finding the repeats by
``id`` did (dict passes over every row, ~3 µs per request, then a ``take`` of every summary
column, ~1 µs); arrays of more elements are still described once (:mod:`tracing.summary`).
Measured on the insurance-claims pipeline (7 events and ~15 tensor rows a request; 4000
requests, then one flush; noisy 2-core VM, several alternating runs), ``consume`` + ``flush``
went from ~34 to ~27 µs of CPU per request (``consume`` ~9 to ~6), 248k instead of 302k
instructions; ~10 µs of what is left is Parquet encoding, zstd and fsync.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracing.events import EventBatch
from tracing.files import NODE_SCHEMA, TENSOR_SCHEMA, probe, write_batch
from tracing.summary import DEFAULT_MAX_VALUES, TensorBatch

# Rows gathered but not committed beyond which consume() commits them itself: a flusher
# thread behind a busy event loop wins the GIL too seldom to keep up, and the rows a crash
# would lose (and the memory they hold) would grow without bound. ~0.5 s of the insurance-claims
# pipeline's events at full speed in one process; the engine pays for the commit then.
MAX_PENDING_ROWS = 32_768
RAN = pa.array(["ok", "error"])  # statuses of a step that ran (if it started)
SKIPPED = pa.array(["skipped"])
NODE_LISTS = ("request_id", "pipeline", "node", "generation", "status", "batch_size", "error",
              "parents", "trace_id", "span_id", "parent_span_ids")
_NAME, _DATATYPE, _DATA = attrgetter("name"), attrgetter("datatype"), attrgetter("data")


def _timestamps(ns: np.ndarray) -> pa.Array:
    """Nanoseconds since the epoch as UTC timestamps; 0 (unknown) becomes null."""
    return pa.array(ns, type=pa.int64(), mask=ns == 0).cast(NODE_SCHEMA.field("time").type)


def _int64(values: list[int]) -> np.ndarray:
    return np.fromiter(values, np.int64, len(values))


@dataclass
class _Gathered:
    """What :meth:`StoreRecorder.consume` copied out of the events since the last flush."""

    nodes: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in NODE_LISTS})
    received: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    is_step: list[bool] = field(default_factory=list)
    # per group of tensors (a step's inputs, its outputs, a pipeline record's tensors)
    group_owner: list[int] = field(default_factory=list)  # its node row
    group_direction: list[str] = field(default_factory=list)
    group_size: list[int] = field(default_factory=list)
    # per tensor row, in group order
    name: list[str] = field(default_factory=list)
    tensors: TensorBatch = field(default_factory=TensorBatch)

    @property
    def rows(self) -> int:
        return len(self.received)


class StoreRecorder:
    """Writes what the engine did into a :class:`tracing.store.TraceStore` directory."""

    def __init__(self, path: str | Path, max_values: int = DEFAULT_MAX_VALUES,
                 max_pending_rows: int = MAX_PENDING_ROWS) -> None:
        """Fails at once (:class:`tracing.files.UnwritableStore`) where the store cannot be
        written: a file is written, fsync'ed and removed there. With ``max_pending_rows``
        rows gathered, :meth:`consume` commits them itself (see ``MAX_PENDING_ROWS``)."""
        self.root = Path(path)
        probe(self.root)
        self.max_values = max_values
        self.max_pending_rows = max_pending_rows
        self.dropped = 0  # node rows (one per event) whose commit failed: they are lost
        self._gathered = _Gathered()
        self._lock = threading.Lock()  # consume (event loop) against flush (flusher thread)
        # one flush at a time, from taking the rows to committing them: a flush called while
        # another writes returns only once that one's rows are committed too
        self._writing = threading.Lock()

    def consume(self, batch: EventBatch) -> None:
        steps, ports = batch.steps, batch.ports
        n_steps, n_ports = len(steps["step"]), len(ports["port"])
        port_times = ports["time_ns"]
        groups = steps["inputs"] + steps["outputs"] + ports["tensors"]
        flat = list(chain.from_iterable(groups))
        with self._lock:
            g = self._gathered
            nodes, base = g.nodes, g.rows
            for column in ("request_id", "pipeline", "generation", "parents", "trace_id", "span_id"):
                nodes[column] += steps[column] + ports[column]
            nodes["node"] += steps["step"] + ports["port"]
            nodes["status"] += steps["status"] + ["ok"] * n_ports
            nodes["batch_size"] += steps["batch_size"] + [1] * n_ports
            nodes["error"] += steps["error"] + [None] * n_ports
            nodes["parent_span_ids"] += steps["parent_span_ids"] + [None] * n_ports
            g.received += steps["received_ns"] + port_times
            g.started += steps["started_ns"] + port_times
            g.finished += steps["finished_ns"] + port_times
            g.is_step += [True] * n_steps + [False] * n_ports
            step_rows = range(base, base + n_steps)
            g.group_owner += chain(step_rows, step_rows, range(base + n_steps, base + n_steps + n_ports))
            g.group_direction += ["inputs"] * n_steps + ["outputs"] * n_steps + ports["port"]
            g.group_size += map(len, groups)
            g.name += map(_NAME, flat)
            g.tensors.add(map(_DATATYPE, flat), list(map(_DATA, flat)))
            behind = g.rows >= self.max_pending_rows
        if behind:  # waits for a flush already writing, then commits what piled up
            self.flush()

    def flush(self) -> None:
        """Commit everything consumed before the call, as one batch of files (waiting for a
        flush already writing: the flusher thread may have taken the rows a moment ago)."""
        with self._writing:
            with self._lock:
                g, self._gathered = self._gathered, _Gathered()
            if g.rows:
                committed: list[int] = []
                try:
                    self._write(g, committed)
                except BaseException:
                    # a full disk, a read-only store: the rows are not kept for a retry (they
                    # would pile up in memory), but counted; the caller logs the error
                    self.dropped += g.rows - sum(committed)
                    raise

    def _write(self, g: _Gathered, committed: list[int]) -> None:
        received, started, finished = (_int64(x) for x in (g.received, g.started, g.finished))
        is_step = np.array(g.is_step, bool)
        columns: dict[str, Any] = dict(g.nodes)
        node = columns["node"] = pa.array(g.nodes["node"], pa.string())
        columns["kind"] = pc.if_else(is_step, "step", node)  # a pipeline record: its port
        status = columns["status"] = pa.array(g.nodes["status"], pa.string())
        # a skipped step has no span of its own (its lineage repeats the upstream span)
        columns["span_id"] = pa.array(g.nodes["span_id"], pa.string(), mask=_is_in(status, SKIPPED))
        ran = _is_in(status, RAN) & (started > 0) & is_step
        nodes = pa.table({
            **columns,
            "time": _timestamps(np.where(received > 0, received, finished)),
            "received": _timestamps(received),
            "started": _timestamps(started),
            "finished": _timestamps(finished),
            "latency_ms": pa.array((finished - started) / 1e6, mask=~ran),
        }, schema=NODE_SCHEMA)
        group_size = _int64(g.group_size)
        owner = np.repeat(_int64(g.group_owner), group_size)
        keys = nodes.select(["request_id", "pipeline", "kind", "node", "generation"]).take(owner)
        direction = pa.array(g.group_direction, pa.string()).take(
            np.repeat(np.arange(len(group_size)), group_size))
        tensors = pa.table({
            **dict(zip(keys.column_names, keys.columns, strict=True)),
            "direction": direction,
            "name": pa.array(g.name, pa.string()),
            **g.tensors.describe(self.max_values),
        }, schema=TENSOR_SCHEMA)
        write_batch(self.root, nodes, tensors, owner, committed)

    def close(self) -> None:
        self.flush()


def _is_in(values: pa.Array, value_set: pa.Array) -> np.ndarray:
    """Whether each value is one of ``value_set`` (null: no), as a numpy mask."""
    return pc.is_in(values, value_set=value_set).to_numpy(zero_copy_only=False)
