"""The trace store read by other tools (pandas, pyarrow) as plain hive-partitioned Parquet, and
by :class:`TraceStore`, also where some files were written with ``pipeline`` as plain strings
(stores written before it was dictionary-encoded)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from engine.lineage import Lineage
from engine.observe import StepEvent
from engine.record import Record
from engine.tensors import Tensor
from tracing.cli import register
from tracing.events import EventBatch, Item, PortEvent
from tracing.files import NODES, TENSORS, committed
from tracing.recorder import StoreRecorder
from tracing.store import TraceStore

ODD = "claims 50%/v2"  # percent-encoded in directory names: a space, '%' and '/'
PIPELINES = ("p", ODD)
NS = pd.Timestamp("2026-11-28", tz="UTC").value
DAY = 86_400 * 10**9
NODE_KEYS = ["request_id", "pipeline", "kind", "node", "generation", "status"]
TENSOR_KEYS = ["request_id", "pipeline", "kind", "node", "generation", "direction", "name"]


def request(pipeline: str, request_id: str, arrival_ns: int) -> list[Item]:
    """A record on ``pipeline``'s inputs topic and its step ``s``, with a tensor each way."""
    x = (Tensor("x", "FP64", np.array([2.0])),)
    y = (Tensor("y", "FP64", np.array([1.0, 2.0, 3.0])),)
    lineage = Lineage(request_id, "a" * 32, "b" * 16, pipeline, "s.outputs")
    return [
        StepEvent(pipeline, "s", "ok", lineage, ("b" * 16,), x, y,
                  arrival_ns + 1_000, arrival_ns + 2_000, arrival_ns + 3_000),
        PortEvent(arrival_ns, pipeline, "inputs",
                  Record(Lineage(request_id, "a" * 32, "b" * 16, pipeline, "inputs"), x)),
    ]


def write_store(path: Path) -> TraceStore:
    """Both pipelines over two days, in one batch (so split into four parts); request ``r0``
    is in both pipelines."""
    events = [item for i, pipeline in enumerate(PIPELINES) for day in range(2)
              for item in request(pipeline, f"r{day}", NS + day * DAY + i * 10**6)]
    recorder = StoreRecorder(path)
    recorder.consume(EventBatch.of(events))
    recorder.flush()
    return TraceStore(path)


def store_rows(store: TraceStore) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The (node, tensor) key rows of every request, as :meth:`TraceStore.records` gives them."""
    nodes, tensors = [], []
    for request_id in ("r0", "r1"):
        for row in store.records(request_id).to_dict("records"):
            nodes.append(tuple(row[k] for k in NODE_KEYS))
            for direction in ("inputs", "outputs"):
                tensors += [(*(row[k] for k in TENSOR_KEYS[:5]), direction, name)
                            for name in row[direction]]
    return sorted(nodes), sorted(tensors)


def rows_of(frame: pd.DataFrame, keys: list[str]) -> list[tuple[Any, ...]]:
    frame = frame.astype({"pipeline": str})
    return sorted(zip(*(frame[k].tolist() for k in keys), strict=True))


READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "pandas.read_parquet": pd.read_parquet,
    "pyarrow.parquet.read_table": lambda d: pq.read_table(d).to_pandas(),
    "pyarrow.parquet.ParquetDataset": lambda d: pq.ParquetDataset(d).read().to_pandas(),
    "pyarrow.dataset with dictionary partitions": lambda d: ds.dataset(
        d, format="parquet",
        partitioning=ds.HivePartitioning.discover(infer_dictionary=True)).to_table().to_pandas(),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TraceStore:
    return write_store(tmp_path_factory.mktemp("readers"))


@pytest.mark.parametrize("reader", READERS)
def test_other_readers_read_both_tables_as_the_store_does(store: TraceStore, reader: str) -> None:
    nodes, tensors = store_rows(store)
    assert {row[1] for row in nodes} == set(PIPELINES)
    assert rows_of(READERS[reader](store.root / NODES), NODE_KEYS) == nodes
    assert rows_of(READERS[reader](store.root / TENSORS), TENSOR_KEYS) == tensors


def test_pandas_filters_by_an_odd_pipeline_name(store: TraceStore) -> None:
    nodes = pd.read_parquet(store.root / NODES, filters=[("pipeline", "==", ODD)])
    assert rows_of(nodes, NODE_KEYS) == [r for r in store_rows(store)[0] if r[1] == ODD]


def test_each_file_holds_its_own_pipeline_and_no_other(store: TraceStore) -> None:
    files = [f for pair in committed(store.root) for f in pair]
    assert len(files) == 8  # two pipelines, two days, two tables
    for f in files:
        column = pq.read_table(f).column("pipeline")
        assert column.type == pa.dictionary(pa.int32(), pa.string())
        assert column.chunk(0).dictionary.to_pylist() == [ODD if "%25" in str(f) else "p"]


def traces(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="flowcause")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["traces", *argv])
    return int(args.func(args))


def everything_read(store: TraceStore, capsys: pytest.CaptureFixture[str]
                    ) -> tuple[list[pd.DataFrame], str]:
    frames = [store.frame(p) for p in PIPELINES]
    frames += [store.records(r) for r in ("r0", "r1")]
    frames.append(store.step_decisions(ODD, ["request_id", "pipeline", "node"]))
    capsys.readouterr()
    assert traces(str(store.root)) == 0
    assert traces(str(store.root), "--request", "r0") == 0
    return frames, capsys.readouterr().out


def test_files_with_string_pipelines_read_as_before(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = write_store(tmp_path)
    frames, out = everything_read(store, capsys)
    # rewrite pipeline p's first day as stores written before did: frame("p") and
    # records("r0") then read files of both kinds at once
    old_files = [f for pair in committed(tmp_path, ["p"]) for f in pair if "11-28" in str(f)]
    assert len(old_files) == 2
    for f in old_files:
        table = pq.read_table(f)
        pq.write_table(table.set_column(table.schema.get_field_index("pipeline"), "pipeline",
                                        table.column("pipeline").cast(pa.string())), f)
        assert pq.read_schema(f).field("pipeline").type == pa.string()
    old_frames, old_out = everything_read(store, capsys)
    assert old_out == out
    assert ODD in out
    for old, new in zip(old_frames, frames, strict=True):
        pd.testing.assert_frame_equal(old, new)
    records = old_frames[2]
    assert set(records["pipeline"]) == set(PIPELINES)
    assert not isinstance(records["pipeline"].dtype, pd.CategoricalDtype)
