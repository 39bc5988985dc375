"""The trace store when writing fails (full disk, read-only directory), closing whatever
happens, the tracing process's errors, two workers tracing one request, missing files."""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from engine.lineage import Lineage
from engine.observe import StepEvent
from engine.record import Record
from engine.tensors import Tensor
from tracing import recorder
from tracing.collector import Collector, FailureLog, Sink
from tracing.config import TracingConfig, build
from tracing.events import EventBatch, Item, PortEvent
from tracing.files import UnwritableStore, committed
from tracing.offload import ProcessSinks
from tracing.recorder import StoreRecorder
from tracing.store import TraceStore


def lineage(request: str, origin: str, pipeline: str = "p") -> Lineage:
    return Lineage(request, "a" * 32, "b" * 16, pipeline, origin)


def request(rid: str, t0: int = 1_800_000_000 * 10**9, pipeline: str = "p", status: str = "ok",
            output: float | None = 4.0, took_ns: int = 1_000_000) -> list[Item]:
    """A request's inputs record, its step ``s`` and (if the step gave one) outputs record."""
    x = (Tensor("x", "FP64", np.array([2.0])),)
    y = (Tensor("y", "FP64", np.array([output])),) if output is not None else ()
    events: list[Item] = [
        PortEvent(t0, pipeline, "inputs", Record(lineage(rid, "inputs", pipeline), x)),
        StepEvent(pipeline, "s", status, lineage(rid, "s.outputs", pipeline), ("b" * 16,), x, y,
                  t0 + 10, t0 + 20, t0 + 20 + took_ns, error=None if status == "ok" else "boom"),
    ]
    if y:
        events.append(PortEvent(t0 + 2_000_000, pipeline, "outputs",
                                Record(lineage(rid, "outputs", pipeline), y)))
    return events


def no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


class MarkingSink:
    """Records that it was flushed and closed (in a file, to be seen from another process)."""

    def __init__(self, path: str | None = None) -> None:
        self.path, self.flushed, self.closed = path, 0, False

    def consume(self, batch: EventBatch) -> None:
        pass

    def flush(self) -> None:
        self.flushed += 1

    def close(self) -> None:
        self.closed = True
        if self.path:
            Path(self.path).write_text("closed")


class FailingClose(MarkingSink):
    def close(self) -> None:
        raise RuntimeError("cannot close")


class FullDiskStore(StoreRecorder):
    """A store whose commits fail as on a full disk (the first ``failures`` of them)."""

    def __init__(self, path: str, failures: int = 10**9) -> None:
        super().__init__(path)
        self.failures = failures

    def _write(self, g: recorder._Gathered, *committed: list[int]) -> None:  # noqa: SLF001
        if self.failures > 0:
            self.failures -= 1
            no_space()
        super()._write(g, *committed)


def full_disk_then_marker(store: str, marker: str) -> Sequence[Sink]:
    return [FullDiskStore(store), MarkingSink(marker)]


def failing_once_store(store: str) -> Sequence[Sink]:
    return [FullDiskStore(store, failures=1)]


def store_sinks(store: str) -> Sequence[Sink]:
    return [StoreRecorder(store)]


def feed(collector: Collector, n: int, first: int = 0) -> None:
    for i in range(first, first + n):
        for event in request(f"r{i}"):
            if isinstance(event, StepEvent):
                collector.on_step(event)
            else:
                collector.on_pipeline_record(event.pipeline, event.port, event.record)


# -- 1: closing whatever happened -------------------------------------------------------------
def test_close_flushes_and_closes_every_sink_when_the_store_cannot_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder, "write_batch", no_space)
    before, broken, after = MarkingSink(), FailingClose(), MarkingSink()
    collector = Collector([before, StoreRecorder(tmp_path), broken, after], flush_seconds=None)
    feed(collector, 10)
    collector.close()  # does not raise
    assert before.closed and after.closed
    assert before.flushed == 1 and after.flushed == 1 and broken.flushed == 1
    collector.close()  # closed once


def test_the_tracing_process_closes_every_sink_when_the_store_cannot_write(
        tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    sinks = ProcessSinks(functools.partial(full_disk_then_marker, str(tmp_path / "store"),
                                           str(marker)), flush_seconds=60)
    collector = Collector([sinks], flush_seconds=None)
    feed(collector, 10)
    collector.close()
    assert marker.read_text() == "closed"
    assert sinks._process.exitcode == 0  # noqa: SLF001


# -- 2: failures counted, logged sparingly, refused at start, reported by the child ----------
def test_failed_writes_are_counted_and_logged_once_until_they_recover(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real = recorder.write_batch
    monkeypatch.setattr(recorder, "write_batch", no_space)
    store = StoreRecorder(tmp_path)
    collector = Collector([store], flush_seconds=None)
    with caplog.at_level(logging.INFO, logger="tracing"):
        for round_ in range(5):  # the flusher thread's rounds
            feed(collector, 4, first=4 * round_)
            collector._flush_sinks(in_process_only=True)  # noqa: SLF001
        assert store.dropped == 5 * 4 * 3  # node rows: inputs, step, outputs per request
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].exc_info is not None
        assert "60 events dropped" not in errors[0].getMessage()  # the first failure's count
        monkeypatch.setattr(recorder, "write_batch", real)
        feed(collector, 4, first=20)
        collector._flush_sinks(in_process_only=True)  # noqa: SLF001
    again = [r.getMessage() for r in caplog.records if "flushes again" in r.getMessage()]
    assert again == ["tracing: StoreRecorder flushes again, after 5 failed flushes"]
    assert len(TraceStore(tmp_path).frame("p")) == 4 and store.dropped == 60
    collector.close()


def test_failures_that_go_on_are_logged_one_line_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(recorder, "write_batch", no_space)
    monkeypatch.setattr(FailureLog, "every_s", 0.0)
    collector = Collector([StoreRecorder(tmp_path)], flush_seconds=None)
    with caplog.at_level(logging.INFO, logger="tracing"):
        for i in range(3):
            feed(collector, 1, first=i)
            with pytest.raises(OSError, match="No space"):  # an explicit flush raises
                collector.flush()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 3 and [r.exc_info is not None for r in errors] == [True, False, False]
    assert "still cannot flush: 1 more failures (9 events dropped so far)" in errors[2].getMessage()
    collector.close()


def test_an_unwritable_store_is_refused_at_start(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(UnwritableStore, match="cannot be written: Not a directory"):
        StoreRecorder(tmp_path / "afile" / "store")
    real_write = os.write

    def read_only(fd: int, data: bytes) -> int:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(".probe."):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", read_only)
    with pytest.raises(UnwritableStore, match="cannot be written: Read-only file system"):
        StoreRecorder(tmp_path / "ro")
    # flowcause serve reports bad settings (ValueError) without a traceback
    with pytest.raises(ValueError, match="cannot be written"):
        build(TracingConfig(store=str(tmp_path / "ro")))
    assert not [p for p in (tmp_path / "ro").iterdir()]  # the probe left nothing


def test_a_failed_flush_in_the_tracing_process_raises_as_in_process(tmp_path: Path) -> None:
    in_process = Collector(failing_once_store(str(tmp_path / "a")), flush_seconds=None)
    sinks = ProcessSinks(functools.partial(failing_once_store, str(tmp_path / "b")),
                         flush_seconds=60)
    remote = Collector([sinks], flush_seconds=None)
    for collector, error in ((in_process, OSError), (remote, RuntimeError)):
        feed(collector, 5)
        with pytest.raises(error, match="No space left on device"):
            collector.flush()
        feed(collector, 5, first=5)
        collector.flush()  # works again: what came after is committed
        collector.close()
    for store in ("a", "b"):
        assert list(TraceStore(tmp_path / store).frame("p").index) == [f"r{i}" for i in range(5, 10)]


# -- 3: no temporary files left behind ---------------------------------------------------------
def test_a_failed_write_leaves_no_temporary_or_orphan_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StoreRecorder(tmp_path)
    real_fsync = os.fsync
    calls = []

    def fsync_fails_for_q_nodes(fd: int) -> None:
        where = os.readlink(f"/proc/self/fd/{fd}")
        calls.append(where)
        if "pipeline=q" in where and "/nodes/" in where and where.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_fails_for_q_nodes)
    store.consume(EventBatch.of(request("r1") + request("r2", pipeline="q")))
    with pytest.raises(OSError, match="No space"):
        store.flush()
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert not [p for p in left if p.endswith(".tmp")]
    # pipeline p's part was committed whole; q's tensors file (committed) was removed again
    assert [p.split("/")[0] + "/" + p.split("/")[1] for p in left] == [
        "nodes/pipeline=p", "tensors/pipeline=p"]
    assert store.dropped == 3  # q's node rows only
    assert len(TraceStore(tmp_path).frame("p")) == 1


# -- 4: one request traced by two workers ------------------------------------------------------
@pytest.mark.parametrize("later_run_first", [True, False])
def test_the_frame_takes_the_latest_run_whole(tmp_path: Path, later_run_first: bool) -> None:
    """Worker A ran step s and it failed; after a rebalance worker B ran it again, 300 ms later,
    and it gave y. Whichever worker commits first, the frame shows B's run: its status, its
    latency and its tensors. Then the other way round: the failing run is the later one."""
    t0 = 1_800_000_000 * 10**9
    failed = request("r1", t0, status="error", output=None, took_ns=5_000_000)
    succeeded = request("r1", t0 + 300_000_000)
    if not later_run_first:
        failed = request("r1", t0 + 300_000_000, status="error", output=None, took_ns=5_000_000)
        succeeded = request("r1", t0)
    a, b = StoreRecorder(tmp_path), StoreRecorder(tmp_path)
    a.consume(EventBatch.of(failed))
    b.consume(EventBatch.of(succeeded))
    first, second = (b, a) if later_run_first else (a, b)
    first.flush()
    second.flush()
    frame = TraceStore(tmp_path).frame("p")
    if later_run_first:
        assert frame.loc["r1", "s.status"] == "ok"
        assert frame.loc["r1", "s.outputs.y"] == 4.0
        assert frame.loc["r1", "s.latency_ms"] == pytest.approx(1.0)
    else:  # the failing run is the latest decision: no output of the other run shows
        assert frame.loc["r1", "s.status"] == "error"
        assert "s.outputs.y" not in frame
        assert frame.loc["r1", "s.latency_ms"] == pytest.approx(5.0)


def test_the_latest_generation_counts_with_its_own_tensors(tmp_path: Path) -> None:
    """Same generation decided twice at the same time: the later batch file counts."""
    t0 = 1_800_000_000 * 10**9
    a, b = StoreRecorder(tmp_path), StoreRecorder(tmp_path)
    a.consume(EventBatch.of(request("r1", t0, output=1.0)))
    b.consume(EventBatch.of(request("r1", t0, status="error", output=None)))
    a.flush()
    b.flush()
    frame = TraceStore(tmp_path).frame("p")
    assert frame.loc["r1", "s.status"] == "error" and "s.outputs.y" not in frame


# -- 6: a batch without its tensors file -------------------------------------------------------
def test_a_batch_without_its_tensors_file_is_read_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = StoreRecorder(tmp_path)
    store.consume(EventBatch.of(request("r1")))
    store.flush()
    [(_, tensors)] = committed(tmp_path)
    tensors.unlink()
    with caplog.at_level(logging.WARNING, logger="tracing"):
        frame = TraceStore(tmp_path).frame("p")
    assert frame.loc["r1", "s.status"] == "ok" and "s.outputs.y" not in frame
    assert any("has no tensors file" in r.getMessage() for r in caplog.records)


# -- 7: a tracing process that cannot start tells its own exit code ----------------------------
def test_a_tracing_process_with_a_bad_store_tells_why_and_its_exit_code(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    bad = str(tmp_path / "afile" / "store")
    with pytest.raises(RuntimeError, match=r"exit code 1\): UnwritableStore: .*Not a directory"):
        ProcessSinks(functools.partial(store_sinks, bad))
