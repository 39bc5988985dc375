"""Reading the trace store: a pipeline's wide frame, one request's lineage, a summary.

Times given to :meth:`TraceStore.frame` may be datetimes (naive ones are taken as UTC),
pandas Timestamps, ISO-8601 strings, or numbers, Python's or numpy's (epoch seconds); the
window is half-open, ``start <= arrival < end``, on the request's arrival at the pipeline's
inputs topic.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from engine.tensors import DTYPES
from tracing.files import NODE_SCHEMA, TENSOR_SCHEMA, committed, pipelines
from tracing.frame import tensor_owners, wide_frame
from tracing.layout import to_layout

log = logging.getLogger(__name__)

TimeLike = datetime | pd.Timestamp | str | float | int | np.integer[Any] | np.floating[Any] | None
FRAME_NODE_COLUMNS = ["request_id", "trace_id", "kind", "node", "generation", "status", "time",
                      "started", "finished", "latency_ms"]
FRAME_TENSOR_COLUMNS = ["request_id", "kind", "node", "generation", "direction", "name",
                        "datatype", "size", "value", "text", "mean", "std", "min", "max", "l2",
                        "nan_count", "hash"]
# A step decides after its request arrived; rows of requests that arrived before midnight may
# land in the next day's partition, so a window reads one more day than it spans.
LATE_DAYS = 1
# A request's first step is timed by its input's arrival, a little before the inputs row:
# for a request that arrived just after midnight it may be in the day before.
EARLY_DAYS = 1


def _plain_pipeline(schema: pa.Schema) -> pa.Schema:
    """``schema`` with ``pipeline`` as plain strings, as it is read: the files store it
    dictionary-encoded (:data:`tracing.files.PIPELINE`), those of stores written before that as
    strings; the scan casts both, and frames and records keep str values, not categories."""
    i = schema.get_field_index("pipeline")
    return schema.set(i, schema.field(i).with_type(pa.string()))


NODES_READ, TENSORS_READ = _plain_pipeline(NODE_SCHEMA), _plain_pipeline(TENSOR_SCHEMA)


def to_timestamp(value: TimeLike) -> pd.Timestamp | None:
    if value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        # numpy's numbers too: pd.Timestamp would read them as nanoseconds
        return pd.Timestamp(int(float(value) * 1e9), unit="ns", tz="UTC")
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _read(files: list[Path], schema: pa.Schema, columns: list[str] | None = None,
          where: ds.Expression | None = None, batch: list[int] | None = None) -> pd.DataFrame:
    """The rows of ``files``; with ``batch`` (per file, its batch's position in ``committed``),
    a ``file`` column says which batch each row came from."""
    names = columns or schema.names
    if not files:
        frame = schema.empty_table().select(names).to_pandas()
        return frame if batch is None else frame.assign(file=np.array([], np.int64))
    dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
    if batch is None:
        return dataset.to_table(columns=columns, filter=where).to_pandas()
    table = dataset.to_table(columns=[*names, "__fragment_index"], filter=where)
    fragment = table.column("__fragment_index").to_numpy()
    return (table.drop_columns(["__fragment_index"]).to_pandas()
            .assign(file=np.asarray(batch, np.int64)[fragment]))


def _tensor_files(files: list[tuple[Path, Path]]) -> tuple[list[Path], list[int]]:
    """The tensors files of committed batches, and each one's position in ``files``. A batch
    whose tensors file is missing is read without its tensors, with a warning: it was
    deleted, or the batch is being written (its tensors file is renamed into place before its
    nodes file, so this cannot happen to a reader and a writer alone)."""
    out, where = [], []
    for i, (nodes, tensors) in enumerate(files):
        if tensors.exists():
            out.append(tensors)
            where.append(i)
        else:
            log.warning("tracing: batch %s has no tensors file %s; its tensors are missing "
                        "from what is read (was it deleted?)", nodes, tensors)
    return out, where


@dataclass
class PipelineSummary:
    pipeline: str
    requests: int  # (request id, trace id) pairs: an id sent again as a new request counts again
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    status: dict[str, dict[str, int]]  # step -> status -> count
    latency_ms: dict[str, float]  # step -> median latency of the runs
    batches: int


class TraceStore:
    """A trace store directory written by :class:`tracing.recorder.StoreRecorder`."""

    def __init__(self, path: str | Path) -> None:
        self.root = Path(path)
        if not self.root.is_dir():
            raise FileNotFoundError(f"no trace store at {self.root}")

    def pipelines(self) -> list[str]:
        return pipelines(self.root)

    def frame(self, pipeline: str, start: TimeLike = None, end: TimeLike = None, *,
              layout: Mapping[str, str] | None = None) -> pd.DataFrame:
        """One row per request of ``pipeline`` that arrived in ``[start, end)``, indexed by
        request id (see :mod:`tracing.frame` for the columns). With ``layout`` (column name
        -> reference, as loaded by :func:`tracing.layout.load_layout`) the frame is turned
        into that layout by :func:`tracing.layout.to_layout`."""
        lo, hi = to_timestamp(start), to_timestamp(end)
        files = committed(self.root, [pipeline],
                          (lo.date() - timedelta(days=EARLY_DAYS)) if lo is not None else None,
                          (hi.date() + timedelta(days=LATE_DAYS)) if hi is not None else None)
        nodes = _read([n for n, _ in files], NODES_READ, FRAME_NODE_COLUMNS,
                      batch=list(range(len(files))))
        arrivals = nodes.loc[nodes["kind"] == "inputs", "request_id"].unique()
        tensor_files, batch = _tensor_files(files)
        tensors = _read(tensor_files, TENSORS_READ, FRAME_TENSOR_COLUMNS,
                        ds.field("request_id").isin(pa.array(arrivals, pa.string())), batch)
        frame = wide_frame(pipeline, nodes, tensors, lo, hi)
        return frame if layout is None else to_layout(frame, layout)

    def records(self, request_id: str) -> pd.DataFrame:
        """Everything recorded for one request, in every pipeline it passed: one row per node
        decision (all fields of the nodes table), in the order they finished, with the id of
        the record the node produced (``record_id``, as its children's ``parents`` name it)
        and ``inputs`` and ``outputs`` columns mapping tensor names to :func:`tensor_view`
        dicts (a pipeline record's tensors are under its port). Each decision has its own
        tensors only (:func:`tracing.frame.tensor_owners`): none for a skip, inputs only for a
        failure, and none where several runs of one generation cannot be told apart."""
        files = committed(self.root)
        where = ds.field("request_id") == request_id
        nodes = _read([n for n, _ in files], NODES_READ, where=where, batch=list(range(len(files))))
        tensor_files, batch = _tensor_files(files)
        tensors = _read(tensor_files, TENSORS_READ, where=where, batch=batch)
        # a tensor row names its node and generation, not its decision (one generation of a
        # node may decide several times, in a loop): told apart as the frame does
        owners = tensor_owners(nodes, tensors, ["pipeline", "kind", "node", "generation", "file"])
        views: dict[tuple[int, str], dict[str, dict[str, Any]]] = {}
        for owner, row in zip(owners.tolist(), tensors.to_dict("records"), strict=True):
            if owner >= 0:
                views.setdefault((owner, row["direction"]), {})[row["name"]] = tensor_view(row)
        nodes = nodes.drop(columns=["file"]).assign(_node=np.arange(len(nodes)))
        nodes = nodes.sort_values("finished", kind="stable").reset_index(drop=True)
        origin = nodes["node"].where(nodes["kind"] != "step", nodes["node"] + ".outputs")
        nodes["record_id"] = (nodes["request_id"] + "/" + nodes["pipeline"] + "/" + origin + "/"
                              + nodes["generation"].astype(str))
        for port in ("inputs", "outputs"):
            nodes[port] = [views.get((i, port), {}) for i in nodes["_node"].tolist()]
        return nodes.drop(columns=["_node"])

    def step_decisions(self, pipeline: str, columns: list[str]) -> pd.DataFrame:
        """Every step decision recorded for ``pipeline``, one row each (``columns`` of the
        nodes table), none merged: in a loop every pass is a row of its own, where
        :meth:`frame` keeps one decision per request and step."""
        files = committed(self.root, [pipeline])
        return _read([n for n, _ in files], NODES_READ, columns, ds.field("kind") == "step")

    def summary(self) -> list[PipelineSummary]:
        out = []
        for pipeline in self.pipelines():
            files = committed(self.root, [pipeline])
            nodes = _read([n for n, _ in files], NODES_READ, FRAME_NODE_COLUMNS)
            inputs = nodes[nodes["kind"] == "inputs"]
            steps = nodes[nodes["kind"] == "step"]
            counts = steps.groupby(["node", "status"]).size()
            status: dict[str, dict[str, int]] = {}
            for (step, state), n in counts.items():
                status.setdefault(step, {})[state] = int(n)
            out.append(PipelineSummary(
                pipeline=pipeline,
                # a request id sent again with another trace is another request
                requests=len(inputs[["request_id", "trace_id"]].drop_duplicates()),
                first=inputs["time"].min() if len(inputs) else None,
                last=inputs["time"].max() if len(inputs) else None,
                status=status,
                latency_ms={k: float(v) for k, v in
                            steps.groupby("node")["latency_ms"].median().dropna().items()},
                batches=len(files),
            ))
        return out


def tensor_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """One recorded tensor: ``datatype``, ``shape``, ``data`` (the full tensor as a numpy
    array when the store kept it, else None) and its summaries."""
    shape = [int(d) for d in row["shape"]]
    datatype = row["datatype"]
    data: np.ndarray | None = None
    if row["size"] == 1 and datatype == "BYTES":
        data = np.array([row["text"]], dtype=object).reshape(shape)
    elif row["size"] == 1:
        data = _numbers([row["value"]], datatype).reshape(shape)
    elif row["values"] is not None:
        data = _numbers(row["values"], datatype).reshape(shape)
    elif row["strings"] is not None:
        data = np.array(list(row["strings"]), dtype=object).reshape(shape)
    view = {"datatype": datatype, "shape": shape, "data": data,
            "hash": row["hash"] if isinstance(row["hash"], str) else None}
    view.update({k: row[k] for k in ("mean", "std", "min", "max", "l2", "nan_count")
                 if not pd.isna(row[k])})
    return view


def _numbers(values: Any, datatype: str) -> np.ndarray:
    """Stored float64 values in the tensor's dtype; as float64 when an integer dtype cannot
    hold them all (INT64 2^63 - 1 is stored rounded to 2^63: cast, it would wrap or overflow)."""
    floats = np.asarray(values, np.float64)
    dtype = DTYPES[datatype]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        top = 2.0 ** (info.bits - 1 if info.min < 0 else info.bits)  # info.max + 1, exact
        if not ((floats >= info.min) & (floats < top)).all():
            return floats
    return floats.astype(dtype)
