"""What the trace store keeps of a tensor: the recording policy.

- A **size-1** tensor is kept whole: numbers and booleans as ``value`` (float64, booleans
  1.0/0.0), a BYTES element as ``text``.
- A **multi-element numeric** tensor (or an empty one) gets summaries: ``mean``, ``std``,
  ``min``, ``max`` and ``l2`` over its non-NaN elements, ``nan_count``, and a ``hash`` of its
  datatype, shape and raw bytes; its flattened values (as float64) are kept in ``values`` as
  well when it has at most ``max_values`` elements.
- A **multi-element BYTES** tensor gets its ``hash``, and its elements in ``strings`` when it
  has at most ``max_values`` of them.

Summaries are computed for a whole batch of tensors at once (a flush of the store: thousands
of tensors), gathered in a :class:`TensorBatch` as the events come. Numeric multi-element
tensors of equal size are stacked into one matrix and reduced along its rows; an array seen
several times (a tensor passed on as is) is described once.

Most tensors are size-1 (a request's fields), and for them the cost is reading the arrays,
not computing: numpy's own batch calls lose here (``np.concatenate`` of thousands of
1-element arrays costs about twice an ``item()`` each), so :meth:`TensorBatch.add` reads
each array's ``size``, ``ndim`` and (size 1) element through ``map``, no Python frame per
tensor (``np.ndarray.item`` unbound: a third of the cost of ``methodcaller("item")``), and
does it as tensors arrive, while their arrays are likely still in the CPU caches (read at
flush time, ~60,000 arrays scattered over the heap, each read cost ~1.4x more, up to 3x).
Sizes and dimensions are kept only for batches that are not all 1-d size-1 tensors; the
``shape`` column is built from them (``shape`` itself makes a tuple each time); columns only
some tensors have (``text``, ``hash``, ``values``, ``strings``) from those tensors alone,
spread out by one ``take``, and all-null columns without a mask. Measured on the
insurance-claims pipeline (~15 tensors per request, all size 1): ~3 µs per request in
``add`` and ~3 in :meth:`TensorBatch.describe`, against ~5 for the per-tensor Python loop
this replaced, which however needed the store to find repeated tensors first (~3 µs).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_MAX_VALUES = 64
STATS = ("mean", "std", "min", "max", "l2")

_SIZE, _NDIM = attrgetter("size"), attrgetter("ndim")
_ITEM = np.ndarray.item  # unbound: a third of the cost of methodcaller("item") per array


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


def _shapes(arrays: Sequence[np.ndarray], size: np.ndarray, ndim: np.ndarray) -> pa.ListArray:
    """The ``shape`` column. A 1-d tensor's shape is its size (both are cheaper to read than
    ``shape``, a new tuple each time); the others' are read one by one."""
    offsets = np.zeros(len(ndim) + 1, np.int32)
    np.cumsum(ndim, out=offsets[1:])
    dims = np.empty(int(offsets[-1]), np.int64)
    flat = ndim == 1
    dims[offsets[:-1][flat]] = size[flat]
    for i in np.flatnonzero(~flat).tolist():
        dims[offsets[i]:offsets[i + 1]] = arrays[i].shape
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(dims))


def _spread(where: np.ndarray, values: pa.Array) -> pa.Array:
    """A column with ``values`` in order at the rows where ``where`` holds, null elsewhere."""
    if not where.any():
        return pa.nulls(len(where), values.type)
    index = np.cumsum(where) - 1
    return values.take(pa.array(index, mask=~where))


def _masked(values: np.ndarray, null: np.ndarray) -> pa.Array:
    """``values`` but null where ``null`` holds (all null: no per-row mask to convert)."""
    if null.all():
        return pa.nulls(len(values), pa.from_numpy_dtype(values.dtype))
    return pa.array(values, mask=null)


def _sparse(n: int, entries: dict[int, Any], type_: pa.DataType) -> pa.Array:
    """A column of n entries of ``type_``, null but at the rows ``entries`` gives."""
    where = np.zeros(n, bool)
    rows = sorted(entries)
    where[rows] = True
    return _spread(where, pa.array([entries[i] for i in rows], type_))


def _pick(items: Sequence[Any], where: np.ndarray) -> Iterator[Any]:
    return map(items.__getitem__, np.flatnonzero(where).tolist())


def _texts(items: list[Any]) -> pa.Array:
    if all(type(v) is str for v in items):  # exact str: taken as is
        return pa.array(items, pa.string())
    return pa.array([_text(v) for v in items], pa.string())


class TensorBatch:
    """Tensors to summarise, added a batch at a time: their datatypes and data, and what the
    summaries read of every array (size, dimensions and, of a size-1 one, its element), read
    as they are added (see the module docstring)."""

    def __init__(self) -> None:
        self.datatypes: list[str] = []
        self.arrays: list[np.ndarray] = []
        self.items: list[Any] = []  # a size-1 tensor's element, else None
        # (first tensor, sizes, ndims) of each batch not all of 1-d size-1 tensors, the others'
        # sizes and ndims go without saying
        self.irregular: list[tuple[int, list[int], list[int]]] = []

    def __len__(self) -> int:
        return len(self.arrays)

    def add(self, datatypes: Iterable[str], arrays: list[np.ndarray]) -> None:
        first, n = len(self.arrays), len(arrays)
        sizes, ndims = list(map(_SIZE, arrays)), list(map(_NDIM, arrays))
        self.datatypes += datatypes
        self.arrays += arrays
        all_single = sizes.count(1) == n
        if all_single:
            self.items += map(_ITEM, arrays)
        else:
            self.items += [_ITEM(a) if k == 1 else None for a, k in zip(arrays, sizes, strict=True)]
        if not all_single or ndims.count(1) != n:
            self.irregular.append((first, sizes, ndims))

    def sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """Each tensor's size and number of dimensions."""
        size = np.ones(len(self.arrays), np.int64)
        ndim = np.ones(len(self.arrays), np.int32)
        for first, sizes, ndims in self.irregular:
            size[first:first + len(sizes)] = sizes
            ndim[first:first + len(ndims)] = ndims
        return size, ndim

    def describe(self, max_values: int = DEFAULT_MAX_VALUES) -> dict[str, pa.Array]:
        """Arrow columns describing the tensors, one entry each, as :func:`summarise`."""
        datatypes, arrays, items = self.datatypes, self.arrays, self.items
        n = len(arrays)
        datatype = pa.array(datatypes, pa.string())
        size, ndim = self.sizes()
        shape = _shapes(arrays, size, ndim)
        is_bytes = pc.equal(datatype, "BYTES").to_numpy(zero_copy_only=False)
        single = size == 1
        scalars = single & ~is_bytes
        texts = single & is_bytes
        vectors = ~single & ~is_bytes
        value = np.full(n, np.nan)
        value[scalars] = np.fromiter(_pick(items, scalars), np.float64)
        text = _spread(texts, _texts(list(_pick(items, texts))))
        stats = {name: np.full(n, np.nan) for name in STATS}
        stats["nan_count"] = np.zeros(n, np.int64)
        # multi-element tensors, each array once (a tensor passed on as is repeats it)
        hashes: dict[int, str] = {}
        strings: dict[int, list[str]] = {}
        kept: dict[int, np.ndarray] = {}  # values of the numeric ones up to max_values
        first: dict[tuple[int, str], int] = {}
        repeats: list[tuple[int, int]] = []  # (tensor, the earlier one with the same array)
        by_size: dict[int, list[int]] = defaultdict(list)
        for i in np.flatnonzero(~single).tolist():
            earlier = first.setdefault((id(arrays[i]), datatypes[i]), i)
            if earlier != i:
                repeats.append((i, earlier))
                continue
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
                kept.update(zip(rows, matrix, strict=True))
        if repeats:
            again, earlier_rows = (list(x) for x in zip(*repeats, strict=True))
            for column in stats.values():
                column[again] = column[earlier_rows]
            for i, earlier in repeats:
                hashes[i] = hashes[earlier]
                for entries in (kept, strings):
                    if earlier in entries:
                        entries[i] = entries[earlier]
        return {
            "datatype": datatype,
            "shape": shape,
            "size": pa.array(size),
            "value": _masked(value, ~scalars),
            "text": text,
            **{name: _masked(column, ~vectors) for name, column in stats.items()},
            "hash": _sparse(n, hashes, pa.string()),
            "values": _sparse(n, kept, pa.list_(pa.float64())),
            "strings": _sparse(n, strings, pa.list_(pa.string())),
        }


def summarise(datatypes: Sequence[str], arrays: Sequence[np.ndarray],
              max_values: int = DEFAULT_MAX_VALUES) -> dict[str, pa.Array]:
    """Arrow columns describing the tensors given by their OIP datatypes and data (one entry
    per tensor), per the policy above.

    Entries that do not apply to a tensor (``value`` of a vector, ``mean`` of a scalar) are
    null; a NaN is a NaN the tensor held.
    """
    batch = TensorBatch()
    batch.add(datatypes, list(arrays))
    return batch.describe(max_values)
