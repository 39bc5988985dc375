"""The trace store on disk: two Parquet tables, partitioned, written one batch at a time.

```
PATH/nodes/pipeline=<name>/date=<YYYY-MM-DD>/<batch>.parquet     one row per node decision
PATH/tensors/pipeline=<name>/date=<YYYY-MM-DD>/<batch>.parquet   one row per tensor
```

A batch is committed in two atomic steps: its tensors file, then its nodes file, each
written to a hidden temporary file, fsync'ed, and renamed into place (then the directory is
fsync'ed). Readers take a batch only once its nodes file exists, so a crash at any moment
leaves complete files only: at worst the batch being written is lost, or its tensors file
stays behind without a nodes file and is ignored. Pipeline names are percent-encoded in
directory names; ``date`` is the UTC day of each row's time.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

NODES = "nodes"
TENSORS = "tensors"
TIMESTAMP = pa.timestamp("ns", tz="UTC")
NS_PER_DAY = 86_400 * 10**9
# The pipeline column has the type hive discovery (pyarrow.parquet.read_table, ParquetDataset,
# pandas.read_parquet) gives the ``pipeline=`` directory level: with plain strings in the files
# those readers refuse to merge the two ("incompatible types: string vs dictionary").
PIPELINE = pa.dictionary(pa.int32(), pa.string())

NODE_SCHEMA = pa.schema([
    ("request_id", pa.string()),
    ("pipeline", PIPELINE),
    ("kind", pa.string()),  # "step" | "inputs" | "outputs" (a pipeline's input/output record)
    ("node", pa.string()),  # step name, or "inputs"/"outputs"
    ("generation", pa.int32()),
    ("status", pa.string()),  # ok | error | timeout | skipped
    ("time", TIMESTAMP),  # when the node received its first input (else when it decided)
    ("received", TIMESTAMP),
    ("started", TIMESTAMP),
    ("finished", TIMESTAMP),
    ("latency_ms", pa.float64()),  # finished - started, for steps that ran
    ("batch_size", pa.int32()),
    ("error", pa.string()),
    ("parents", pa.list_(pa.string())),  # ids of the records this node consumed
    ("trace_id", pa.string()),
    ("span_id", pa.string()),
    ("parent_span_ids", pa.list_(pa.string())),
])

TENSOR_SCHEMA = pa.schema([
    ("request_id", pa.string()),
    ("pipeline", PIPELINE),
    ("kind", pa.string()),
    ("node", pa.string()),
    ("generation", pa.int32()),
    ("direction", pa.string()),  # "inputs" | "outputs" (for pipeline records: the port)
    ("name", pa.string()),
    ("datatype", pa.string()),
    ("shape", pa.list_(pa.int64())),
    ("size", pa.int64()),
    ("value", pa.float64()),
    ("text", pa.string()),
    ("mean", pa.float64()),
    ("std", pa.float64()),
    ("min", pa.float64()),
    ("max", pa.float64()),
    ("l2", pa.float64()),
    ("nan_count", pa.int64()),
    ("hash", pa.string()),
    ("values", pa.list_(pa.float64())),
    ("strings", pa.list_(pa.string())),
])


# Dictionary-encode only the few-valued columns and keep statistics only on the times
# (readers prune files by time; min/max of random ids prune nothing): about a third less
# encoding time per batch than pyarrow's defaults, at much the same file size.
_FEW_VALUES = {"pipeline", "kind", "node", "status", "error", "direction", "name", "datatype"}
_TIMES = ("time", "received", "started", "finished")


def _encoding(schema: pa.Schema) -> dict[str, list[str]]:
    return {"use_dictionary": [n for n in schema.names if n in _FEW_VALUES],
            "write_statistics": [n for n in schema.names if n in _TIMES]}


def partition(root: Path, table: str, pipeline: str, day: date) -> Path:
    return root / table / f"pipeline={quote(pipeline, safe='')}" / f"date={day.isoformat()}"


class UnwritableStore(OSError, ValueError):
    """The trace store's directory cannot be written (a ValueError too: a bad setting)."""


def probe(root: Path) -> None:
    """Create ``root`` if need be and check that a file can be written, fsync'ed and removed
    there, so that a store that cannot be written is refused at start, not at every flush."""
    tmp = root / f".probe.{uuid.uuid4().hex}.tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"flowcause")
            os.fsync(fd)
        finally:
            os.close(fd)
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise UnwritableStore(exc.errno, f"the trace store {root} cannot be written: "
                              f"{exc.strerror or exc}") from exc


def _atomic_write(table: pa.Table, directory: Path, name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd", **_encoding(table.schema))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, directory / name)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not fill up with half-written files
        raise
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _one_pipeline(part: pa.Table, pipeline: str) -> pa.Table:
    """``part`` with ``pipeline`` as the only entry of its pipeline column's dictionary: a
    filtered column keeps the whole batch's dictionary, and Parquet would store every
    pipeline's name in each file."""
    i = part.schema.get_field_index("pipeline")
    column = pa.DictionaryArray.from_arrays(np.zeros(part.num_rows, np.int32), [pipeline])
    return part.set_column(i, part.schema.field(i), column)


def write_batch(root: Path, nodes: pa.Table, tensors: pa.Table, owner: np.ndarray,
                committed: list[int] | None = None) -> None:
    """Commit one batch, split by (pipeline, day); ``owner[i]`` is tensor i's node row. The
    node rows of each part committed are appended to ``committed`` (a part that fails is not:
    its tensors file, if committed, is removed again; the parts before it stay)."""
    name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"  # sorts by time
    days = pc.cast(nodes["time"], pa.int64()).to_numpy() // NS_PER_DAY
    pipelines = nodes["pipeline"].combine_chunks()  # dictionary-encoded (NODE_SCHEMA)
    codes = pipelines.indices.to_numpy()
    keys = np.unique(codes.astype(np.int64) * (1 << 32) + days)
    for key in keys.tolist():
        code, day = divmod(key, 1 << 32)
        pipeline = pipelines.dictionary[code].as_py()
        when = date(1970, 1, 1) + timedelta(days=day)
        part_nodes, part_tensors = nodes, tensors
        if len(keys) > 1:
            rows = (codes == code) & (days == day)
            part_nodes = _one_pipeline(nodes.filter(rows), pipeline)
            part_tensors = _one_pipeline(tensors.filter(rows[owner]), pipeline)
        tensor_dir = partition(root, TENSORS, pipeline, when)
        _atomic_write(part_tensors, tensor_dir, name)
        try:
            _atomic_write(part_nodes, partition(root, NODES, pipeline, when), name)
        except BaseException:
            with contextlib.suppress(OSError):  # an orphan: no reader would take it
                (tensor_dir / name).unlink()
            raise
        if committed is not None:
            committed.append(part_nodes.num_rows)


def _dates(directory: Path) -> Iterator[tuple[date, Path]]:
    for d in sorted(directory.glob("date=*")):
        try:
            yield date.fromisoformat(d.name.removeprefix("date=")), d
        except ValueError:
            continue


def pipelines(root: Path) -> list[str]:
    return sorted(unquote(p.name.removeprefix("pipeline="))
                  for p in (root / NODES).glob("pipeline=*"))


def not_a_store(root: Path) -> str | None:
    """Why the directory ``root`` is no trace store: it holds something, but no ``nodes/`` or
    ``tensors/`` directory. An empty directory (or one with a writer's hidden probe file) is a
    store nothing was flushed to yet: None."""
    if ((root / NODES).is_dir() or (root / TENSORS).is_dir()
            or all(e.name.startswith(".") for e in root.iterdir())):
        return None
    return f"{root} is not a trace store (it has no {NODES}/ or {TENSORS}/ directory)"


def committed(root: Path, pipeline_names: Iterable[str] | None = None,
              first: date | None = None, last: date | None = None) -> list[tuple[Path, Path]]:
    """(nodes file, tensors file) of every committed batch, optionally by pipeline and day."""
    out = []
    for pipeline in pipelines(root) if pipeline_names is None else pipeline_names:
        node_dir = root / NODES / f"pipeline={quote(pipeline, safe='')}"
        for day, day_dir in _dates(node_dir):
            if (first and day < first) or (last and day > last):
                continue
            tensor_dir = partition(root, TENSORS, pipeline, day)
            out.extend((f, tensor_dir / f.name) for f in sorted(day_dir.glob("*.parquet")))
    return out
