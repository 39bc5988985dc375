"""Records: what moves on a topic — tensors (or an error, or an absence notice) plus lineage.

On Kafka a record is headers (the lineage, see :mod:`engine.lineage`) and a value in a
compact binary framing (all integers little-endian)::

    record  = magic "\\xfc\\x01" | kind u8 | tensor count u16 | error length u32 | error utf-8
              | tensor*
    tensor  = name length u16 | datatype code u8 | ndim u8 | parameters length u32
              | data length u64 | name utf-8 | dims u64*ndim | parameters JSON
              | zero padding to a multiple of 8 bytes from the record start | data

``data`` is the C-order array in little-endian; for ``BYTES`` it is, per element, a length
u32, a tag u8 (0 bytes, 1 str) and the element's bytes (str as UTF-8), so both element
types come back as they went. The datatype code is the index in :data:`DATATYPE_CODES`.
Encoding costs a struct pack and one copy of the array bytes; decoded arrays are read-only
views of the value (docs/kafka-transport.md). 0xFC never starts JSON, so a value
starting with ``{`` is read as the JSON form (``kind``, ``tensors`` in OIP v2 JSON,
``error``) that external producers may write.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from engine.lineage import Lineage
from engine.tensors import DTYPES, Tensor, TensorError

MAGIC = b"\xfc\x01"
KINDS = ("data", "error", "absent")
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}
DATATYPE_CODES = tuple(DTYPES)
_DATATYPE_CODE = {d: i for i, d in enumerate(DATATYPE_CODES)}
_WIRE_DTYPES = tuple(DTYPES[d].newbyteorder("<") if d != "BYTES" else None for d in DATATYPE_CODES)
_HEAD = struct.Struct("<2sBHI")
_TENSOR = struct.Struct("<HBBIQ")
_ELEMENT = struct.Struct("<IB")
_DIMS = [struct.Struct(f"<{n}Q") for n in range(65)]  # numpy allows at most 64 dimensions
_PAD = bytes(8)
# The longest error or absence text a record carries, in characters: a step's exception
# message can be any size, and a record over the broker's message.max.bytes (1 MiB by
# default) cannot be produced at all.
ERROR_TEXT_LIMIT = 4096
# How an error record's origin ends: ``<node>.errors`` when a node failed (an absence notice
# follows on its pipeline's control topic, so the output stages downstream still decide),
# ``<node>.refused`` when a record was refused before any node could decide on it (a reused
# request id, a record too large to produce or impossible to decode: nothing follows).
FAILED_SUFFIX = ".errors"
REFUSED_SUFFIX = ".refused"


def bounded_error(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    """``text``, cut to its first ``limit`` characters when longer, saying so."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [truncated: {len(text)} characters in all]"


class Record:
    """One message on a topic.

    ``kind`` is ``data`` (tensors), ``error`` (``error`` holds the message, on the errors
    topic) or ``absent`` (a control notice: the origin produced nothing for this request and
    generation, ``error`` holds the reason ``skipped`` or ``error: ...``).
    """

    __slots__ = ("lineage", "tensors", "kind", "error", "source")

    def __init__(
        self,
        lineage: Lineage,
        tensors: tuple[Tensor, ...] = (),
        kind: str = "data",
        error: str | None = None,
    ) -> None:
        self.lineage = lineage
        self.tensors = tensors
        self.kind = kind
        self.error = error
        # Where a transport read it from (Kafka: (topic, partition, offset)); None in memory.
        self.source: tuple[str, int, int] | None = None

    def tensor(self, name: str) -> Tensor | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None

    def encode(self) -> tuple[bytes, list[tuple[str, bytes]]]:
        """Value bytes (the binary framing above) and Kafka headers."""
        return self.encode_value(), self.lineage.to_headers()

    def encode_value(self) -> bytes:
        error = self.error.encode() if self.error is not None else b""
        tensors = self.tensors
        parts: list[Any] = [_HEAD.pack(MAGIC, _KIND_CODE[self.kind], len(tensors), len(error)), error]
        size = _HEAD.size + len(error)
        for t in tensors:
            name = t.name.encode()
            code = _DATATYPE_CODE[t.datatype]
            array = t.data
            shape = array.shape
            params = json.dumps(dict(t.parameters)).encode() if t.parameters else b""
            if code == _BYTES:
                data: bytes = _pack_bytes(array)
            else:
                wire = _WIRE_DTYPES[code]
                if array.dtype != wire:
                    array = array.astype(wire)
                data = array.tobytes()  # C order whatever the array's layout
            size += _TENSOR.size + len(name) + 8 * len(shape) + len(params)
            pad = -size % 8
            parts += (_TENSOR.pack(len(name), code, len(shape), len(params), len(data)), name,
                      _DIMS[len(shape)].pack(*shape), params, _PAD[:pad], data)
            size += pad + len(data)
        return b"".join(parts)

    @classmethod
    def decode(cls, value: bytes | None, headers: Iterable[tuple[str, bytes]]) -> Record:
        """Inverse of :meth:`encode` (or the JSON form); ValueError when undecodable (a null
        value, a Kafka tombstone, included)."""
        if value is None:
            raise ValueError("null value (a tombstone): not a flowcause record")
        lineage = Lineage.from_headers(headers)
        if value[:2] == MAGIC:
            try:
                kind, tensors, error = _decode_binary(value)
            except (struct.error, IndexError, ValueError, OverflowError) as exc:
                raise ValueError(f"malformed binary record: {exc}") from None
            return cls(lineage, tensors, kind, error)
        return cls._decode_json(lineage, value)

    @classmethod
    def _decode_json(cls, lineage: Lineage, value: bytes) -> Record:
        try:
            body = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"record value is neither the binary framing nor JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("kind") not in KINDS:
            raise ValueError("record value lacks a valid 'kind'")
        try:
            tensors = tuple(Tensor.from_json(t) for t in body.get("tensors", []))
        except TensorError as exc:
            raise ValueError(str(exc)) from None
        return cls(lineage, tensors, body["kind"], body.get("error"))

    def __repr__(self) -> str:
        what = ", ".join(t.name for t in self.tensors) if self.kind == "data" else self.error
        return f"Record({self.kind}, {self.lineage.record_id}, {what})"


_BYTES = _DATATYPE_CODE["BYTES"]


def failure_records(lineage: Lineage, node: str, origin: str, text: str) -> tuple[Record, Record]:
    """A node's failure as every transport reports it: the error record (origin
    ``<node>.errors``) and, in place of the record the node did not make, an absence notice
    (origin ``origin``, text ``error: ...``), both with ``lineage``'s parents and visits (in a
    cycle, joins key the notice to its generation)."""
    def at(where: str) -> Lineage:
        return lineage.child(lineage.pipeline, where, lineage.span_id, lineage.parents,
                             lineage.generation, lineage.visits)

    return (Record(at(f"{node}{FAILED_SUFFIX}"), kind="error", error=text),
            Record(at(origin), kind="absent", error=f"error: {text}"))


def _pack_bytes(array: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for v in array.reshape(-1).tolist():
        if isinstance(v, str):
            raw, tag = v.encode(), 1
        elif isinstance(v, bytes):
            raw, tag = v, 0
        else:
            raise TensorError(f"BYTES tensor holds a {type(v).__name__}, not bytes/str")
        parts += (_ELEMENT.pack(len(raw), tag), raw)
    return b"".join(parts)


def _decode_binary(value: bytes) -> tuple[str, tuple[Tensor, ...], str | None]:
    """Parse the binary framing; any inconsistency raises (struct.error, ValueError, ...)."""
    buf = value  # the arrays are read-only views of it: step code is given copies of its own
    _, kind_code, count, error_len = _HEAD.unpack_from(buf)
    kind = KINDS[kind_code]
    pos = _HEAD.size + error_len
    error = buf[_HEAD.size:pos].decode() if kind_code else None
    tensors = []
    for _ in range(count):
        name_len, code, ndim, params_len, data_len = _TENSOR.unpack_from(buf, pos)
        pos += _TENSOR.size + name_len
        name = buf[pos - name_len:pos].decode()
        shape = _DIMS[ndim].unpack_from(buf, pos)
        pos += 8 * ndim + params_len
        params = json.loads(buf[pos - params_len:pos]) if params_len else None
        pos += -pos % 8
        if not name or not isinstance(params, dict | None):
            raise ValueError("a tensor without a name, or parameters that are not an object")
        if code == _BYTES:
            array = _unpack_bytes(buf, pos, pos + data_len, math.prod(shape)).reshape(shape)
        else:
            dtype = _WIRE_DTYPES[code]
            if data_len % dtype.itemsize:
                raise ValueError(f"tensor {name!r}: {data_len} data bytes for {DATATYPE_CODES[code]}")
            # frombuffer checks the bounds, reshape that the element count fits the shape
            array = np.frombuffer(buf, dtype, data_len // dtype.itemsize, pos)
            if array.shape != shape:
                array = array.reshape(shape)
        tensors.append(Tensor(name, DATATYPE_CODES[code], array, params))
        pos += data_len
    if pos != len(buf):
        raise ValueError(f"{len(buf) - pos} bytes after the last tensor")
    return kind, tuple(tensors), error


def _unpack_bytes(buf: bytes, pos: int, end: int, count: int) -> np.ndarray:
    items: list[bytes | str] = []
    for _ in range(count):
        length, tag = _ELEMENT.unpack_from(buf, pos)
        pos += _ELEMENT.size
        raw = bytes(buf[pos:pos + length])
        items.append(raw.decode() if tag else raw)
        pos += length
    if pos != end:
        raise ValueError("BYTES elements do not fill their data")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array
