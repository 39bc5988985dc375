"""Engine events as columns: what the collector hands its sinks, in this process or another.

The engine reports a :class:`engine.observe.StepEvent` per step decision and a
:class:`PortEvent` per record on a pipeline's inputs or outputs topic. The collector queues
them and, a batch at a time, turns them into an :class:`EventBatch`: one list per field
(``STEP_COLUMNS``, ``PORT_COLUMNS``), filled by ``operator.attrgetter`` at C speed, so that
the events themselves die at once. Tensors stay the engine's own objects (tuples of
:class:`engine.tensors.Tensor` in the ``inputs``, ``outputs`` and ``tensors`` columns).

To cross to a tracing process (:mod:`tracing.offload`), :func:`to_wire` makes a batch plain
data: each distinct tensor object once, as its name, datatype, shape, dtype and raw bytes
(BYTES tensors: their list of values), referenced by index; :func:`from_wire` restores it,
tensor objects shared as they were.
"""

from __future__ import annotations

import pickle
from operator import attrgetter
from typing import Any, NamedTuple

import numpy as np

from engine.observe import StepEvent
from engine.record import Record
from engine.tensors import Tensor

# lineage attributes both tables carry, each as a column of the same name
LINEAGE_COLUMNS = ("request_id", "trace_id", "span_id", "record_id", "generation", "parents")
# column -> attribute path on a StepEvent
STEP_COLUMNS: dict[str, str] = {
    "pipeline": "pipeline", "step": "step", "status": "status",
    **{column: f"lineage.{column}" for column in LINEAGE_COLUMNS},
    "parent_span_ids": "parent_span_ids", "inputs": "inputs", "outputs": "outputs",
    "received_ns": "received_ns", "started_ns": "started_ns", "finished_ns": "finished_ns",
    "batch_size": "batch_size", "error": "error",
}
# column -> attribute path on a PortEvent
PORT_COLUMNS: dict[str, str] = {
    "pipeline": "pipeline", "port": "port", "time_ns": "time_ns",
    **{column: f"record.lineage.{column}" for column in LINEAGE_COLUMNS},
    "tensors": "record.tensors",
}
TENSOR_COLUMNS = (("inputs", "outputs"), ("tensors",))  # per table: columns of tensor tuples
_STEP_GET = {column: attrgetter(path) for column, path in STEP_COLUMNS.items()}
_PORT_GET = {column: attrgetter(path) for column, path in PORT_COLUMNS.items()}

Columns = dict[str, list[Any]]


class PortEvent(NamedTuple):
    """A record seen on a pipeline's ``inputs`` or ``outputs`` topic, and when."""

    time_ns: int
    pipeline: str
    port: str
    record: Record


Item = StepEvent | PortEvent


class EventBatch(NamedTuple):
    """A batch of events as columns, steps and port records apart, each in report order."""

    steps: Columns
    ports: Columns

    @classmethod
    def of(cls, items: list[Item]) -> EventBatch:
        steps = [i for i in items if type(i) is StepEvent]
        ports = [i for i in items if type(i) is not StepEvent]
        return cls({c: list(map(get, steps)) for c, get in _STEP_GET.items()},
                   {c: list(map(get, ports)) for c, get in _PORT_GET.items()})

    def __len__(self) -> int:
        return len(self.steps["step"]) + len(self.ports["port"])


def to_wire(batch: EventBatch) -> bytes:
    """The batch as bytes for another process (see the module docstring)."""
    index: dict[int, int] = {}
    described: list[tuple[Any, ...]] = []
    tables = []
    for columns, tensor_columns in zip(batch, TENSOR_COLUMNS, strict=True):
        plain = dict(columns)
        for column in tensor_columns:
            refs = []
            for group in columns[column]:
                at = []
                for t in group:
                    i = index.get(id(t))
                    if i is None:
                        i = index[id(t)] = len(described)
                        d = t.data
                        described.append((t.name, t.datatype, d.shape, d.dtype,
                                          d.tolist() if d.dtype.kind == "O" else d.tobytes()))
                    at.append(i)
                refs.append(tuple(at))
            plain[column] = refs
        tables.append(plain)
    return pickle.dumps((tables, described), protocol=pickle.HIGHEST_PROTOCOL)


def from_wire(data: bytes) -> EventBatch:
    """The batch :func:`to_wire` was given."""
    tables, described = pickle.loads(data)
    tensors = [Tensor(name, datatype, np.array(values, dtype=dtype).reshape(shape)
                      if dtype.kind == "O" else np.frombuffer(values, dtype).reshape(shape))
               for name, datatype, shape, dtype, values in described]
    for columns, tensor_columns in zip(tables, TENSOR_COLUMNS, strict=True):
        for column in tensor_columns:
            columns[column] = [tuple([tensors[i] for i in refs]) for refs in columns[column]]
    return EventBatch(*tables)
