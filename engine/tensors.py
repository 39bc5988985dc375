"""Open Inference Protocol v2 tensors: JSON at the edges, numpy inside."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_DATATYPE_OF_KIND = {
    np.dtype(dt).str: name for name, dt in DTYPES.items() if name != "BYTES"
}
DATATYPE_OF_DTYPE = {dt: name for name, dt in DTYPES.items() if name != "BYTES"}


class TensorError(ValueError):
    """A tensor whose name, datatype, shape or data do not agree."""


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype name for a numpy array (strings and bytes are BYTES)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    try:
        return _DATATYPE_OF_KIND[array.dtype.str]
    except KeyError:
        raise TensorError(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype") from None


class Tensor:
    """One named OIP v2 tensor. ``data`` is a numpy array of ``shape``."""

    __slots__ = ("name", "datatype", "data", "parameters")

    def __init__(
        self,
        name: str,
        datatype: str,
        data: np.ndarray,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.datatype = datatype
        self.data = data
        self.parameters = parameters

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def renamed(self, name: str) -> Tensor:
        return Tensor(name, self.datatype, self.data, self.parameters)

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, {self.datatype}, shape={list(self.shape)})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Tensor)
            and self.name == other.name
            and self.datatype == other.datatype
            and self.shape == other.shape
            and bool(np.array_equal(self.data, other.data))
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_array(cls, name: str, value: Any) -> Tensor:
        """Wrap a step's return value (array, scalar, list or Tensor) as a tensor named ``name``.

        Numpy string and bytes arrays become BYTES object arrays of str / bytes. A Tensor is
        checked (:func:`_checked`), never cast: TensorError when its datatype is unknown, its
        data's dtype is not its datatype's, or its parameters are not a JSON object."""
        if type(value) is np.ndarray:
            datatype = DATATYPE_OF_DTYPE.get(value.dtype)
            if datatype is not None:
                return cls(name, datatype, value)
        if isinstance(value, Tensor):
            return _checked(name, value)
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        kind = array.dtype.kind
        if kind == "O":
            array = _bytes_values(name, array)
        elif kind in "SU":
            array = array.astype(object)  # as the Kafka transport decodes it: bytes or str
        return cls(name, datatype_of(array), array)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Tensor:
        """Decode and check one OIP JSON tensor (``name, datatype, shape, data``)."""
        if not isinstance(obj, Mapping):
            raise TensorError(f"a tensor must be a JSON object, got {type(obj).__name__}")
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise TensorError("tensor without a name")
        datatype = obj.get("datatype")
        if datatype not in DTYPES:
            raise TensorError(
                f"tensor {name!r}: unknown datatype {datatype!r} (one of {', '.join(DTYPES)})"
            )
        shape = obj.get("shape")
        if not isinstance(shape, Sequence) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise TensorError(f"tensor {name!r}: shape must be a list of non-negative ints")
        flat = _flatten(obj.get("data"), name)
        expected = math.prod(shape)
        if len(flat) != expected:
            raise TensorError(
                f"tensor {name!r}: shape {list(shape)} needs {expected} elements, data has {len(flat)}"
            )
        return cls(name, datatype, _to_array(flat, datatype, name).reshape(shape), obj.get("parameters"))

    def to_json(self) -> dict[str, Any]:
        if self.datatype == "BYTES":
            data: list[Any] = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in self.data.reshape(-1)
            ]
        else:
            data = self.data.reshape(-1).tolist()
        out: dict[str, Any] = {
            "name": self.name,
            "datatype": self.datatype,
            "shape": list(self.shape),
            "data": data,
        }
        if self.parameters:
            out["parameters"] = dict(self.parameters)
        return out


def carried(tensors: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A request's tensors as every transport carries them, each checked as a step's own
    Tensor is (:func:`_checked`; TensorError otherwise): the same tuple when they already
    are, the common case, found without a call per tensor."""
    for tensor in tensors:
        data = tensor.data
        if type(data) is not np.ndarray or tensor.parameters is not None:
            break
        dtype = data.dtype
        if type(tensor.datatype) is not str or dtype is not DTYPES.get(tensor.datatype):
            break  # an identity test: numpy's dtypes of native byte order are singletons
        if dtype is _OBJECT and _bytes_values(tensor.name, data) is not data:
            break
    else:
        return tensors
    return tuple(_checked(t.name, t) for t in tensors)


_OBJECT = np.dtype(object)


def _bytes_values(name: str, array: np.ndarray) -> np.ndarray:
    """An object array of bytes/str (TensorError otherwise), holding Python str and bytes as
    Kafka decodes them: numpy's np.str_ / np.bytes_ (what indexing a numpy string array
    gives) become str / bytes, in a new array; the array itself when there are none."""
    plain = True
    for value in array.flat:
        kind = type(value)
        if kind is str or kind is bytes:
            continue
        if not isinstance(value, (bytes, str)):
            raise TensorError(f"tensor {name!r}: object array holds values that are not bytes/str")
        plain = False
    if plain:
        return array
    out = np.empty(array.size, dtype=object)
    out[:] = [bytes(v) if isinstance(v, bytes) else str(v) for v in array.flat]
    return out.reshape(array.shape)


def _checked(name: str, tensor: Tensor) -> Tensor:
    """A step's own Tensor, as a transport can carry it: its datatype known, its data a numpy
    array of that datatype's dtype (BYTES: bytes/str objects; numpy string and bytes arrays
    become object arrays, as Kafka decodes them), its parameters a JSON object (encoded and
    decoded, as Kafka carries them). Named ``name`` (the key the step returned it under)."""
    datatype = tensor.datatype
    expected = DTYPES.get(datatype) if isinstance(datatype, str) else None
    if expected is None:
        raise TensorError(
            f"tensor {name!r}: unknown datatype {datatype!r} (one of {', '.join(DTYPES)})")
    data = tensor.data
    if isinstance(data, np.generic):
        data = np.asarray(data)
    elif not isinstance(data, np.ndarray):
        raise TensorError(f"tensor {name!r}: data is a {type(data).__name__}, not a numpy array")
    if data.dtype != expected:
        kind = data.dtype.kind
        if datatype == "BYTES" and kind in "SU":
            data = data.astype(object)
        else:
            want = "an object array of bytes/str" if datatype == "BYTES" else f"dtype {expected}"
            raise TensorError(f"tensor {name!r}: datatype {datatype} needs {want}, the array's "
                              f"dtype is {data.dtype}")
    elif datatype == "BYTES":
        data = _bytes_values(name, data)
    parameters = tensor.parameters
    if parameters is not None:
        if not isinstance(parameters, Mapping):
            raise TensorError(f"tensor {name!r}: parameters are a {type(parameters).__name__}, "
                              "not a mapping")
        parameters = _json_object(name, parameters)
    if name == tensor.name and data is tensor.data and parameters is tensor.parameters:
        return tensor
    return Tensor(name, datatype, data, parameters)


_JSON_SCALARS = frozenset((str, int, float, bool, type(None)))


def _json_object(name: str, parameters: Mapping[str, Any]) -> dict[str, Any] | None:
    """``parameters`` as the Kafka transport carries them: JSON-encoded and decoded (tuples
    become lists, keys strings), None when empty."""
    if not parameters:
        return None
    if all(type(k) is str and type(v) in _JSON_SCALARS for k, v in parameters.items()):
        return dict(parameters)  # what the round trip gives, without it (the common case)
    try:
        return json.loads(json.dumps(dict(parameters)))  # type: ignore[no-any-return]
    except (TypeError, ValueError, RecursionError) as exc:
        raise TensorError(f"tensor {name!r}: parameters cannot be encoded as JSON: {exc}") from None


def _flatten(data: Any, name: str) -> list[Any]:
    if data is None:
        raise TensorError(f"tensor {name!r}: no data")
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _to_array(flat: list[Any], datatype: str, name: str) -> np.ndarray:
    dtype = DTYPES[datatype]
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise TensorError(f"tensor {name!r}: BYTES data must be strings")
        return np.array(flat, dtype=object)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) or v in (0, 1) for v in flat):
            raise TensorError(f"tensor {name!r}: BOOL data must be true/false")
        return np.array(flat, dtype=dtype)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        raise TensorError(f"tensor {name!r}: {datatype} data must be numbers")
    if dtype.kind in "iu":
        if not all(isinstance(v, int) or float(v).is_integer() for v in flat):
            raise TensorError(f"tensor {name!r}: {datatype} data must be integers")
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise TensorError(f"tensor {name!r}: value out of range for {datatype}")
    return np.array(flat, dtype=dtype)


def tensors_from_json(items: Any) -> tuple[Tensor, ...]:
    if not isinstance(items, list):
        raise TensorError("'inputs' must be a list of tensors")
    return tuple(Tensor.from_json(t) for t in items)
