"""Engine events as columns: what the collector hands its sinks, in this process or another.

The engine reports a :class:`engine.observe.StepEvent` per step decision and a
:class:`PortEvent` per record on a pipeline's inputs or outputs topic. The collector queues
them and, a batch at a time, hands them over as an :class:`EventBatch`: one list per field
(``STEP_COLUMNS``, ``PORT_COLUMNS``), filled by ``operator.attrgetter`` at C speed when a
sink first asks for them. Tensors stay the engine's own objects (tuples of
:class:`engine.tensors.Tensor` in the ``inputs``, ``outputs`` and ``tensors`` columns).

To cross to a tracing process (:mod:`tracing.offload`), :func:`to_wire` packs the events
of a batch in one pass, without making columns: a row of plain values per event (lineage as
its parts, the record id left for the other side to build) and each distinct tensor object
once, as its name, datatype, shape, dtype and raw bytes (BYTES tensors: their list of
values), referenced by index. ``marshal`` writes it (a little quicker than ``pickle`` on
such plain values; both processes run the same interpreter). Since marshal writes any
object with a buffer as bytes, a batch with a BYTES tensor holding anything but ``bytes``
and ``str`` is pickled instead. :func:`from_wire` makes the columns from the rows, tensor
objects shared as they were.
"""

from __future__ import annotations

import contextlib
import marshal
import pickle
from operator import attrgetter
from typing import Any, NamedTuple

import numpy as np

from engine.lineage import record_id_of
from engine.observe import StepEvent
from engine.record import Record
from engine.tensors import Tensor

# lineage attributes both tables carry, each as a column of the same name
LINEAGE_COLUMNS = ("request_id", "trace_id", "span_id", "record_id", "generation", "parents",
                   "sampled", "tracestate")
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


class EventBatch:
    """A batch of events as columns, steps and port records apart, each in report order.

    :meth:`of` keeps the events and makes the columns when a sink first reads them, so that
    a batch bound for a tracing process is packed straight from its events (:func:`to_wire`).
    """

    __slots__ = ("items", "_steps", "_ports")

    def __init__(self, steps: Columns | None, ports: Columns | None,
                 items: list[Item] | None = None) -> None:
        self._steps, self._ports, self.items = steps, ports, items

    @classmethod
    def of(cls, items: list[Item]) -> EventBatch:
        return cls(None, None, items)

    def _columns(self) -> tuple[Columns, Columns]:
        if self._steps is None or self._ports is None:
            items = self.items or []
            steps = [i for i in items if type(i) is StepEvent]
            ports = [i for i in items if type(i) is not StepEvent]
            self._steps = {c: list(map(get, steps)) for c, get in _STEP_GET.items()}
            self._ports = {c: list(map(get, ports)) for c, get in _PORT_GET.items()}
        return self._steps, self._ports

    @property
    def steps(self) -> Columns:
        return self._columns()[0]

    @property
    def ports(self) -> Columns:
        return self._columns()[1]

    def __len__(self) -> int:
        if self.items is not None:
            return len(self.items)
        return len(self.steps["step"]) + len(self.ports["port"])


# A row on the wire: the columns in order, lineage pipeline and origin in place of the
# record id (the receiving side builds it: record_id_of).
_STEP_ROW = ("pipeline", "step", "status", "request_id", "trace_id", "span_id", "lineage_pipeline",
             "origin", "generation", "parents", "sampled", "tracestate", "parent_span_ids", "inputs",
             "outputs", "received_ns", "started_ns", "finished_ns", "batch_size", "error")
_PORT_ROW = ("pipeline", "port", "time_ns", "request_id", "trace_id", "span_id", "lineage_pipeline",
             "origin", "generation", "parents", "sampled", "tracestate", "tensors")
_MARSHAL, _PICKLE = b"M", b"P"
_OBJECT = np.dtype(object).str  # such arrays go as their flat values, others as bytes
_TEXT = {bytes, str}
_DTYPE_CODE: dict[np.dtype[Any], str] = {}
_DTYPE_OF_CODE: dict[str, np.dtype[Any]] = {}
_DTYPE_CODES_KEPT = 256  # string dtypes differ by length: bound the cache


def to_wire(batch: EventBatch) -> bytes:
    """The events of a batch :meth:`EventBatch.of` made, as bytes for another process (see
    the module docstring). One pass over the events, then one over their distinct tensors; no
    columns: this runs on the engine's event loop."""
    if batch.items is None:
        raise ValueError("to_wire packs the events a batch was made of; this one has columns only")
    index: dict[int, int] = {}
    tensors: list[Tensor] = []
    step_rows: list[tuple[Any, ...]] = []
    port_rows: list[tuple[Any, ...]] = []
    find, keep = index.get, tensors.append
    for event in batch.items:
        is_step = type(event) is StepEvent
        refs: list[list[int]] = []
        for group in ((event.inputs, event.outputs) if is_step  # type: ignore[union-attr]
                      else (event.record.tensors,)):  # type: ignore[union-attr]
            at = []
            for t in group:
                i = find(id(t))
                if i is None:
                    i = index[id(t)] = len(tensors)
                    keep(t)
                at.append(i)
            refs.append(at)
        if is_step:
            e: StepEvent = event  # type: ignore[assignment]
            lin = e.lineage
            step_rows.append((e.pipeline, e.step, e.status, lin.request_id, lin.trace_id,
                              lin.span_id, lin.pipeline, lin.origin, lin.generation, lin.parents,
                              lin.sampled, lin.tracestate, e.parent_span_ids, refs[0], refs[1],
                              e.received_ns, e.started_ns, e.finished_ns, e.batch_size, e.error))
        else:
            p: PortEvent = event  # type: ignore[assignment]
            lin = p.record.lineage
            port_rows.append((p.pipeline, p.port, p.time_ns, lin.request_id, lin.trace_id,
                              lin.span_id, lin.pipeline, lin.origin, lin.generation, lin.parents,
                              lin.sampled, lin.tracestate, refs[0]))
    described: list[tuple[Any, ...]] = []
    describe = described.append
    exact = True
    for t in tensors:
        d = t.data
        dtype = d.dtype
        code = _DTYPE_CODE.get(dtype)
        if code is None:  # reading dtype.str makes a new string each time: cached per dtype
            if len(_DTYPE_CODE) >= _DTYPE_CODES_KEPT:
                _DTYPE_CODE.clear()
            code = _DTYPE_CODE[dtype] = dtype.str
        if dtype.hasobject:
            values = d.ravel().tolist()
            # marshal writes any buffer (a numpy scalar, say) as bytes: only exact bytes and
            # str go through it, anything else makes a pickle
            exact &= set(map(type, values)) <= _TEXT
            describe((t.name, t.datatype, d.shape, code, values))
        else:
            describe((t.name, t.datatype, d.shape, code, d.tobytes()))
    payload = (step_rows, port_rows, described)
    if exact:
        with contextlib.suppress(ValueError):  # e.g. a str subclass as an id
            return _MARSHAL + marshal.dumps(payload)
    return _PICKLE + pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


def from_wire(data: bytes) -> EventBatch:
    """The batch :func:`to_wire` was given, as columns."""
    payload = memoryview(data)[1:]
    step_rows, port_rows, described = (marshal.loads(payload) if data[:1] == _MARSHAL
                                       else pickle.loads(payload))
    tensors: list[Tensor] = []
    dtypes = _DTYPE_OF_CODE  # parsing a dtype string costs more than making the array
    for name, datatype, shape, code, values in described:
        if code == _OBJECT:
            array = np.empty(len(values), dtype=object)
            array[:] = values  # element by element, whatever the elements are
            array = array.reshape(shape)
        else:
            dtype = dtypes.get(code)
            if dtype is None:
                if len(dtypes) >= _DTYPE_CODES_KEPT:
                    dtypes.clear()
                dtype = dtypes[code] = np.dtype(code)
            array = np.frombuffer(values, dtype)
            if array.shape != shape:
                array = array.reshape(shape)
        tensors.append(Tensor(name, datatype, array))
    tables = []
    for rows, fields, columns, tensor_columns in (
            (step_rows, _STEP_ROW, STEP_COLUMNS, TENSOR_COLUMNS[0]),
            (port_rows, _PORT_ROW, PORT_COLUMNS, TENSOR_COLUMNS[1])):
        transposed = map(list, zip(*rows, strict=True)) if rows else ([] for _ in fields)
        wire: Columns = dict(zip(fields, transposed, strict=True))
        wire["record_id"] = list(map(record_id_of, wire["request_id"], wire["lineage_pipeline"],
                                     wire["origin"], wire["generation"]))
        tensor = tensors.__getitem__
        for column in tensor_columns:
            wire[column] = [tuple(map(tensor, refs)) for refs in wire[column]]
        tables.append({c: wire[c] for c in columns})
    return EventBatch(*tables)
