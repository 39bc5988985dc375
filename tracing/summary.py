"""What the trace store keeps of a tensor: the recording policy.

- A **size-1** tensor is kept whole: numbers and booleans as ``value`` (float64, booleans
  1.0/0.0), a BYTES element as ``text``.
- A **multi-element numeric** tensor (or an empty one) gets summaries: ``mean``, ``std``,
  ``min``, ``max`` and ``l2`` over its non-NaN elements, ``nan_count``, and a ``hash`` of its
  datatype, shape and raw bytes; its flattened values (as float64) are kept in ``values`` as
  well when it has at most ``max_values`` elements.
- A **multi-element BYTES** tensor gets its ``hash``, and its elements in ``strings`` when it
  has at most ``max_values`` of them.

Summaries are computed for a whole batch of tensors at once: tensors of equal size are
stacked into one matrix and reduced along its rows, so the cost per tensor is a few numpy
operations shared by the batch, not a Python loop over elements.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_MAX_VALUES = 64
STATS = ("mean", "std", "min", "max", "l2")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def tensor_hash(datatype: str, data: np.ndarray) -> str:
    """16 hex digits identifying a tensor's datatype, shape and contents."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{datatype}{list(data.shape)}".encode())
    if datatype == "BYTES":
        for item in data.reshape(-1):
            raw = item if isinstance(item, bytes) else str(item).encode()
            h.update(len(raw).to_bytes(8, "little"))
            h.update(raw)
    else:
        h.update(np.ascontiguousarray(data).tobytes())
    return h.hexdigest()


def _row_stats(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """NaN-ignoring mean, std, min, max, L2 norm and NaN count of each row."""
    rows, width = matrix.shape
    if width == 0:
        nan = np.full(rows, np.nan)
        return {**{s: nan for s in STATS}, "nan_count": np.zeros(rows, np.int64)}
    mask = np.isnan(matrix)
    count = width - mask.sum(axis=1)
    clean = np.where(mask, 0.0, matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = clean.sum(axis=1) / count
        deviation = np.where(mask, 0.0, matrix - mean[:, None])
        std = np.sqrt((deviation * deviation).sum(axis=1) / count)
        low = np.where(mask, np.inf, matrix).min(axis=1)
        high = np.where(mask, -np.inf, matrix).max(axis=1)
    empty = count == 0
    low[empty] = np.nan
    high[empty] = np.nan
    return {"mean": mean, "std": std, "min": low, "max": high,
            "l2": np.sqrt((clean * clean).sum(axis=1)), "nan_count": mask.sum(axis=1)}


def _shapes(arrays: list[np.ndarray]) -> pa.ListArray:
    ndim = np.fromiter([a.ndim for a in arrays], np.int32, len(arrays))
    offsets = np.zeros(len(arrays) + 1, np.int32)
    np.cumsum(ndim, out=offsets[1:])
    dims = np.fromiter(chain.from_iterable([a.shape for a in arrays]), np.int64, int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(dims))


def summarise(datatypes: Sequence[str], arrays: Sequence[np.ndarray],
              max_values: int = DEFAULT_MAX_VALUES) -> dict[str, pa.Array]:
    """Arrow columns describing the tensors given by their OIP datatypes and data (one entry
    per tensor), per the policy above.

    Entries that do not apply to a tensor (``value`` of a vector, ``mean`` of a scalar) are
    null; a NaN is a NaN the tensor held.
    """
    n = len(arrays)
    datatype = pa.array(datatypes, pa.string())
    size = np.fromiter([a.size for a in arrays], np.int64, n)
    is_bytes = pc.equal(datatype, "BYTES").to_numpy(zero_copy_only=False)
    single = size == 1
    scalars = single & ~is_bytes
    vectors = ~single & ~is_bytes
    value = np.full(n, np.nan)
    value[scalars] = [arrays[i].item() for i in np.flatnonzero(scalars).tolist()]
    text: list[str | None] = [None] * n
    for i in np.flatnonzero(single & is_bytes).tolist():
        text[i] = _text(arrays[i].item())
    stats = {name: np.full(n, np.nan) for name in STATS}
    stats["nan_count"] = np.zeros(n, np.int64)
    hashes: list[str | None] = [None] * n
    values: list[np.ndarray | None] = [None] * n
    strings: list[list[str] | None] = [None] * n
    by_size: dict[int, list[int]] = defaultdict(list)
    for i in np.flatnonzero(~single).tolist():
        hashes[i] = tensor_hash(datatypes[i], arrays[i])
        if not is_bytes[i]:
            by_size[int(size[i])].append(i)
        elif size[i] <= max_values:
            strings[i] = [_text(v) for v in arrays[i].reshape(-1)]
    for width, rows in by_size.items():
        matrix = np.stack([arrays[i].reshape(-1) for i in rows]).astype(np.float64)
        for name, column in _row_stats(matrix).items():
            stats[name][rows] = column
        if width <= max_values:
            for row, i in enumerate(rows):
                values[i] = matrix[row]
    return {
        "datatype": datatype,
        "shape": _shapes(arrays),
        "size": pa.array(size),
        "value": pa.array(value, mask=~scalars),
        "text": pa.array(text, pa.string()),
        **{name: pa.array(column, mask=~vectors) for name, column in stats.items()},
        "hash": pa.array(hashes, pa.string()),
        "values": pa.array(values, pa.list_(pa.float64())),
        "strings": pa.array(strings, pa.list_(pa.string())),
    }
