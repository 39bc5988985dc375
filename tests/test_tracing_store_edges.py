"""Edges of reading the trace store: day partitions at midnight, numpy times, integers at the
limit of their dtype, settings out of range, BYTES tensors too large to keep whole."""

from __future__ import annotations

import argparse
import re
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.lineage import Lineage
from engine.observe import StepEvent
from engine.record import Record
from engine.tensors import Tensor
from tracing import recorder as recorder_module
from tracing.cli import register
from tracing.config import TracingConfig
from tracing.events import EventBatch, Item, PortEvent
from tracing.files import committed
from tracing.recorder import StoreRecorder
from tracing.store import TraceStore, to_timestamp

MIDNIGHT = pd.Timestamp("2026-11-28", tz="UTC")
NS = MIDNIGHT.value


def lineage(request_id: str, origin: str) -> Lineage:
    return Lineage(request_id, "a" * 32, "b" * 16, "p", origin)


def request(request_id: str, arrival_ns: int, received_ns: int, inputs: tuple[Tensor, ...],
            outputs: tuple[Tensor, ...]) -> list[Item]:
    """Pipeline ``p``: a record on its inputs topic at ``arrival_ns``, and step ``s``, whose
    input arrived at ``received_ns``, making ``outputs``."""
    return [
        StepEvent("p", "s", "ok", lineage(request_id, "s.outputs"), ("b" * 16,), inputs, outputs,
                  received_ns, received_ns + 1_000, arrival_ns + 50_000),
        PortEvent(arrival_ns, "p", "inputs", Record(lineage(request_id, "inputs"), inputs)),
    ]


def store_of(path: Path, events: list[Item], max_values: int = 64) -> TraceStore:
    recorder = StoreRecorder(path, max_values)
    recorder.consume(EventBatch.of(events))
    recorder.flush()
    return TraceStore(path)


def traces(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="flowcause")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["traces", *argv])
    return int(args.func(args))


def test_a_window_from_midnight_keeps_a_first_step_timed_the_day_before(tmp_path: Path) -> None:
    x = (Tensor("x", "FP64", np.array([2.0])),)
    y = (Tensor("y", "FP64", np.array([4.0])),)
    events = [*request("late", NS + 5_000, NS - 20_000, x, y),  # input seen just before midnight
              *request("early", NS - 10**9, NS - 10**9 - 20_000, x, y)]
    store = store_of(tmp_path, events)
    days = {nodes.parent.name for nodes, _ in committed(tmp_path)}
    assert days == {"date=2026-11-27", "date=2026-11-28"}
    frame = store.frame("p", start=MIDNIGHT)
    assert list(frame.index) == ["late"]
    assert frame.loc["late", "s.status"] == "ok"
    assert frame.loc["late", "s.ran"] == 1.0
    assert frame.loc["late", "s.outputs.y"] == 4.0


def test_numpy_numbers_are_epoch_seconds(tmp_path: Path) -> None:
    seconds = 1_792_000_000  # a multiple of 128: exact even as float32
    expected = pd.Timestamp(seconds, unit="s", tz="UTC")
    for number in (np.int64(seconds), np.int32(seconds), np.float64(seconds), np.float32(seconds)):
        assert to_timestamp(number) == expected, type(number)
    x = (Tensor("x", "FP64", np.array([2.0])),)
    store = store_of(tmp_path, request("r", NS, NS - 1_000, x, x))
    assert list(store.frame("p", start=np.int64(NS // 10**9 - 1)).index) == ["r"]
    assert store.frame("p", start=np.int64(NS // 10**9 + 1)).empty


def test_integers_beyond_their_dtype_read_back_as_floats_not_wrapped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    top = np.iinfo(np.int64).max  # stored as the float64 2^63, which no INT64 holds
    inputs = (Tensor("claim_id", "INT64", np.array([top])),
              Tensor("ids", "INT64", np.array([1, top, -5])),
              Tensor("small", "INT64", np.array([1, 2, -3])))
    store_of(tmp_path, request("r", NS, NS - 1_000, inputs, ()))
    records = TraceStore(tmp_path).records("r")
    views = records.loc[records["kind"] == "inputs", "inputs"].iloc[0]
    assert views["claim_id"]["data"].dtype == np.float64
    assert views["claim_id"]["data"].tolist() == [2.0 ** 63]
    assert views["ids"]["data"].tolist() == [1.0, 2.0 ** 63, -5.0]
    assert views["small"]["data"].dtype == np.int64  # what fits keeps its dtype
    assert views["small"]["data"].tolist() == [1, 2, -3]
    assert traces(str(tmp_path), "--request", "r") == 0
    assert "input ids INT64[3]: [1.0, 9.223372036854776e+18, -5.0]" in capsys.readouterr().out


@pytest.mark.parametrize(("variable", "value"), [
    ("FLOWCAUSE_TRACE_FLUSH_SECONDS", "0"),
    ("FLOWCAUSE_TRACE_FLUSH_SECONDS", "-1"),
    ("FLOWCAUSE_TRACE_FLUSH_SECONDS", "nan"),
    ("FLOWCAUSE_TRACE_FLUSH_SECONDS", "inf"),
    ("FLOWCAUSE_TRACE_MAX_VALUES", "-5"),
])
def test_settings_out_of_range_are_refused(monkeypatch: pytest.MonkeyPatch, variable: str,
                                           value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=re.escape(f"{variable}={value!r} is not a valid")):
        TracingConfig.from_env()


def test_settings_given_directly_are_held_to_the_same_ranges() -> None:
    for name, value in [("flush_seconds", 0.0), ("flush_seconds", -1.0),
                        ("flush_seconds", float("nan")), ("flush_seconds", float("inf")),
                        ("max_values", -5)]:
        with pytest.raises(ValueError, match=re.escape(f"{name}={value!r} is not a valid")):
            TracingConfig(**{name: value})
    assert TracingConfig(max_values=0, flush_seconds=2).flush_seconds == 2


def test_a_large_bytes_tensor_shows_its_hash(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    x = (Tensor("x", "FP64", np.array([2.0])),)
    names = (Tensor("names", "BYTES", np.array([f"s{i}" for i in range(100)], dtype=object)),)
    store = store_of(tmp_path, request("r", NS, NS - 1_000, x, names))
    records = store.records("r")
    digest = records.loc[records["node"] == "s", "outputs"].iloc[0]["names"]["hash"]
    assert isinstance(digest, str) and len(digest) == 16
    assert traces(str(tmp_path), "--request", "r") == 0
    assert f"output names BYTES[100]: {{'hash': '{digest}'}}" in capsys.readouterr().out


def test_a_flush_waits_for_the_flush_already_writing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The flusher thread may take the rows a moment before the caller's flush(): that flush
    found nothing and returned while the thread still wrote, so a reader right after it (the
    benchmark's timer, a test) missed the batch."""
    slow_start, real_write = threading.Event(), recorder_module.write_batch

    def slow_write(*args: object) -> None:
        slow_start.set()
        time.sleep(0.5)
        real_write(*args)

    monkeypatch.setattr(recorder_module, "write_batch", slow_write)
    x, y = (Tensor("x", "FP64", np.array([2.0])),), (Tensor("y", "FP64", np.array([4.0])),)
    recorder = StoreRecorder(tmp_path)
    recorder.consume(EventBatch.of(request("r1", NS, NS - 20_000, x, y)))
    flusher = threading.Thread(target=recorder.flush)
    flusher.start()
    assert slow_start.wait(5)  # the thread has taken the rows and is writing them
    recorder.flush()
    assert list(TraceStore(tmp_path).frame("p").index) == ["r1"]
    flusher.join()
