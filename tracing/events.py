"""Engine events as columns: what the collector hands its sinks, in this process or another.

The engine reports a :class:`engine.observe.StepEvent` per step decision and a
:class:`PortEvent` per record on a pipeline's inputs or outputs topic. The collector queues
them and, a batch at a time, hands them over as an :class:`EventBatch`: one list per field
(``STEP_COLUMNS``, ``PORT_COLUMNS``), made when a sink first asks for them. Tensors stay the
engine's own objects (tuples of :class:`engine.tensors.Tensor` in the ``inputs``,
``outputs`` and ``tensors`` columns).

Both the columns and the wire form start from rows: one comprehension per table reads each
event's fields into a flat tuple (``STEP_ROW``, ``PORT_ROW``: the lineage as its parts, the
record id left to be built from them), and ``zip(*rows)`` turns the rows into columns at C
speed. Counted under callgrind on the insurance-claims pipeline (7 events per request),
making the columns takes ~56k instructions per request this way, against ~91k with an
``operator.attrgetter`` per column (~130 mostly dotted reads per request).

To cross to a tracing process (:mod:`tracing.offload`), :func:`to_wire` packs those columns,
with the tensor columns as indexes into a list of each distinct tensor object once, as its
name, datatype, shape, dtype and raw bytes (BYTES tensors: their list of values).
``marshal`` writes it (a little quicker than ``pickle`` on such plain values; both processes
run the same interpreter). Since marshal writes any object with a buffer as bytes, a batch
with a BYTES tensor holding anything but ``bytes`` and ``str`` is pickled instead.
:func:`from_wire` makes the columns again, tensor objects shared as they were.
"""

from __future__ import annotations

import contextlib
import marshal
import pickle
from typing import Any, NamedTuple

import numpy as np

from engine.lineage import record_id_of
from engine.observe import StepEvent
from engine.record import Record
from engine.tensors import Tensor

# The fields of a row, in order. Lineage comes as its parts; ``lineage_pipeline`` and
# ``origin`` only go into the record id (record_id_of), which the columns carry instead.
_LINEAGE = ("request_id", "trace_id", "span_id", "lineage_pipeline", "origin", "generation",
            "parents", "sampled", "tracestate")
STEP_ROW = ("pipeline", "step", "status", *_LINEAGE, "parent_span_ids", "inputs", "outputs",
            "received_ns", "started_ns", "finished_ns", "batch_size", "error")
PORT_ROW = ("pipeline", "port", "time_ns", *_LINEAGE, "tensors")
TENSOR_COLUMNS = (("inputs", "outputs"), ("tensors",))  # per table: columns of tensor tuples
# the columns of each table, in order; the lineage columns both carry, under the same names
LINEAGE_COLUMNS = ("request_id", "trace_id", "span_id", "record_id", "generation", "parents",
                   "sampled", "tracestate")
STEP_COLUMNS = ("pipeline", "step", "status", *LINEAGE_COLUMNS, "parent_span_ids", "inputs",
                "outputs", "received_ns", "started_ns", "finished_ns", "batch_size", "error")
PORT_COLUMNS = ("pipeline", "port", "time_ns", *LINEAGE_COLUMNS, "tensors")

Columns = dict[str, list[Any]]
Rows = list[tuple[Any, ...]]


class PortEvent(NamedTuple):
    """A record seen on a pipeline's ``inputs`` or ``outputs`` topic, and when."""

    time_ns: int
    pipeline: str
    port: str
    record: Record


Item = StepEvent | PortEvent


def _rows(items: list[Item]) -> tuple[Rows, Rows]:
    """The step events' and the port events' rows (``STEP_ROW``, ``PORT_ROW``), in order."""
    steps = [(e.pipeline, e.step, e.status, (lin := e.lineage).request_id, lin.trace_id,
              lin.span_id, lin.pipeline, lin.origin, lin.generation, lin.parents, lin.sampled,
              lin.tracestate, e.parent_span_ids, e.inputs, e.outputs, e.received_ns,
              e.started_ns, e.finished_ns, e.batch_size, e.error)
             for e in items if type(e) is StepEvent]
    ports = [(p.pipeline, p.port, p.time_ns, (lin := (r := p.record).lineage).request_id,  # type: ignore[union-attr]
              lin.trace_id, lin.span_id, lin.pipeline, lin.origin, lin.generation, lin.parents,
              lin.sampled, lin.tracestate, r.tensors)
             for p in items if type(p) is not StepEvent]
    return steps, ports


def _table(columns: list[tuple[Any, ...]], fields: tuple[str, ...],
           names: tuple[str, ...]) -> Columns:
    """Columns in the order of ``fields`` (none for an empty table) as lists by name, in the
    order of ``names``, the record id built from the lineage parts."""
    table = (dict(zip(fields, map(list, columns), strict=True)) if columns
             else {f: [] for f in fields})
    table["record_id"] = list(map(record_id_of, table["request_id"], table["lineage_pipeline"],
                                  table["origin"], table["generation"]))
    return {c: table[c] for c in names}


class EventBatch:
    """A batch of events as columns, steps and port records apart, each in report order.

    :meth:`of` keeps the events and makes the columns when a sink first reads them, so that
    a batch bound for a tracing process is packed straight from its rows (:func:`to_wire`).
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
            steps, ports = _rows(self.items or [])
            self._steps = _table(list(zip(*steps, strict=True)), STEP_ROW, STEP_COLUMNS)
            self._ports = _table(list(zip(*ports, strict=True)), PORT_ROW, PORT_COLUMNS)
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


_MARSHAL, _PICKLE = b"M", b"P"
_OBJECT = np.dtype(object).str  # such arrays go as their flat values, others as bytes
_TEXT = {bytes, str}
_DTYPE_CODE: dict[np.dtype[Any], str] = {}
_DTYPE_OF_CODE: dict[str, np.dtype[Any]] = {}
_DTYPE_CODES_KEPT = 256  # string dtypes differ by length: bound the cache
# where the tensor tuples are in a row
_STEP_TENSORS = (STEP_ROW.index("inputs"), STEP_ROW.index("outputs"))
_PORT_TENSORS = (PORT_ROW.index("tensors"),)


def to_wire(batch: EventBatch) -> bytes:
    """The events of a batch :meth:`EventBatch.of` made, as bytes for another process (see
    the module docstring). Rows, transposed, then one pass over the tensor columns and one
    over the distinct tensors: this runs on the engine's event loop."""
    if batch.items is None:
        raise ValueError("to_wire packs the events a batch was made of; this one has columns only")
    step_rows, port_rows = _rows(batch.items)
    tables = [list(zip(*step_rows, strict=True)), list(zip(*port_rows, strict=True))]
    index: dict[int, int] = {}
    tensors: list[Tensor] = []
    find, keep = index.get, tensors.append
    for columns, where in zip(tables, (_STEP_TENSORS, _PORT_TENSORS), strict=True):
        for at in where if columns else ():
            refs = []
            for group in columns[at]:
                ref = []
                for t in group:
                    i = find(id(t))
                    if i is None:
                        i = index[id(t)] = len(tensors)
                        keep(t)
                    ref.append(i)
                refs.append(ref)
            columns[at] = refs  # type: ignore[call-overload]
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
    payload = (tables[0], tables[1], described)
    if exact:
        with contextlib.suppress(ValueError):  # e.g. a str subclass as an id
            return _MARSHAL + marshal.dumps(payload)
    return _PICKLE + pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
def from_wire(data: bytes) -> EventBatch:
    """The batch :func:`to_wire` was given, as columns."""
    payload = memoryview(data)[1:]
    step_columns, port_columns, described = (marshal.loads(payload) if data[:1] == _MARSHAL
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
    tensor = tensors.__getitem__
    for columns, fields, names, tensor_columns in (
            (step_columns, STEP_ROW, STEP_COLUMNS, TENSOR_COLUMNS[0]),
            (port_columns, PORT_ROW, PORT_COLUMNS, TENSOR_COLUMNS[1])):
        table = _table(columns, fields, names)
        for column in tensor_columns:
            table[column] = [tuple(map(tensor, refs)) for refs in table[column]]
        tables.append(table)
    return EventBatch(*tables)
