"""Tracing in a process of its own: events packed and unpacked whole, a store written by the
tracing process identical to one written in process, spans exported from it, the engine's
process killed with -9, and a tracing process that dies."""

from __future__ import annotations

import asyncio
import functools
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from engine.engine import Engine
from engine.lineage import Lineage
from engine.observe import StepEvent
from engine.record import Record
from engine.spec import load_pipelines
from engine.tensors import Tensor
from scenarios.steps.insurance_claims import STEPS, request_tensors
from tests.test_tracing_durability import kill_9_once_committed
from tracing.collector import Collector, Sink
from tracing.config import TracingConfig, build
from tracing.events import TENSOR_COLUMNS, EventBatch, Item, PortEvent, from_wire, to_wire
from tracing.offload import ProcessSinks
from tracing.recorder import StoreRecorder
from tracing.spans import SpanSink
from tracing.store import TraceStore

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "scenarios" / "pipelines" / "insurance_claims.yaml"
CLAIMS = ROOT / ".." / "shared" / "reference" / "insurance-claims" / "insurance_claims.csv"
PIPELINE = "insurance_claims"


def events() -> list[Item]:
    shared = Tensor("x", "FP64", np.arange(6, dtype=np.float64).reshape(2, 3))
    text = Tensor("report", "BYTES", np.array([b"YES", b"NO"], dtype=object))
    flag = Tensor("ok", "BOOL", np.array([True]))
    lin = Lineage("r1", "a" * 32, "b" * 16, "p", "s.outputs", 2, ("r1/p/inputs/0",),
                  {"s": 2}, tracestate="v=1")
    return [
        StepEvent("p", "s", "ok", lin, ("c" * 16, "d" * 16), (shared, text), (shared, flag),
                  1, 2, 3, 4, None),
        StepEvent("p", "t", "skipped", lin, (), (), (), 0, 0, 9, 1, "not triggered"),
        StepEvent("p", "u", "error", Lineage("r3", "e" * 32, "f" * 16, "p", "u.outputs",
                                             sampled=False),
                  ("c" * 16,), (text,), (), 5, 6, 7, 1, "boom"),
        PortEvent(11, "p", "outputs", Record(lin, (shared, Tensor("n", "INT32",
                                                                  np.array([[7]], np.int32))))),
        PortEvent(12, "p", "inputs", Record(lin, (), "absent", "skipped")),
    ]


def test_event_columns_cross_to_another_process_whole() -> None:
    original = events()
    batch = EventBatch.of(original)
    steps = [e for e in original if isinstance(e, StepEvent)]
    assert batch.steps["step"] == [e.step for e in steps] and len(batch) == len(original)
    assert batch.steps["record_id"] == [e.lineage.record_id for e in steps]
    assert batch.steps["sampled"] == [True, True, False]
    assert batch.ports["tracestate"] == ["v=1", "v=1"]
    assert batch.ports["time_ns"] == [11, 12]
    assert batch.ports["tensors"][0] is original[3].record.tensors  # type: ignore[union-attr]
    again = from_wire(pickle.loads(pickle.dumps(to_wire(batch))))
    assert_same_events(batch, again)
    # a tensor object passed on as is stays one object (the store summarises it once)
    assert again.steps["inputs"][0][0] is again.steps["outputs"][0][0]
    assert again.ports["tensors"][0][0] is again.steps["inputs"][0][0]


def assert_same_events(batch: EventBatch, again: EventBatch) -> None:
    for table, copy, tensor_columns in zip((batch.steps, batch.ports), (again.steps, again.ports),
                                           TENSOR_COLUMNS, strict=True):
        assert table.keys() == copy.keys()
        for column in table:
            if column not in tensor_columns:
                assert copy[column] == table[column], column
                continue
            for group, copied in zip(table[column], copy[column], strict=True):
                assert [(t.name, t.datatype, t.data.dtype, t.data.shape, t.data.tolist())
                        for t in group] == [(u.name, u.datatype, u.data.dtype, u.data.shape,
                                             u.data.tolist()) for u in copied]


def test_tensors_marshal_cannot_write_cross_as_a_pickle() -> None:
    lin = Lineage("r2", "a" * 32, "b" * 16, "p", "s.outputs")
    odd = Tensor("odd", "BYTES", np.empty(3, dtype=object))
    odd.data[:] = [np.int64(3), b"x", (1, 2)]  # a tuple element stays one element
    scalar = Tensor("one", "BYTES", np.array(b"only", dtype=object))  # 0-d: tolist is no list
    text = Tensor("text", "BYTES", np.array(["ab", "cde"]))  # fixed-width unicode, not objects
    original: list[Item] = [StepEvent("p", "s", "ok", lin, (), (odd,), (scalar, text), 1, 2, 3)]
    wire = to_wire(EventBatch.of(original))
    assert wire[:1] == b"P"
    again = from_wire(wire)
    assert_same_events(EventBatch.of(original), again)
    assert type(again.steps["inputs"][0][0].data[0]) is np.int64  # marshal would make it bytes
    assert again.steps["inputs"][0][0].data[2] == (1, 2)
    assert again.steps["outputs"][0][1].data.dtype == text.data.dtype
    assert from_wire(to_wire(EventBatch.of(original[:0]))).steps["step"] == []
    plain = [StepEvent("p", "s", "ok", lin, (), (scalar,), (text,), 1, 2, 3)]
    assert to_wire(EventBatch.of(plain))[:1] == b"M"
    assert_same_events(EventBatch.of(plain), from_wire(to_wire(EventBatch.of(plain))))


def send_claims(tracing_observer: Collector, n: int, first: int = 0) -> None:
    """Claims ``first`` to ``first + n`` of the reference, request ids their numbers."""
    claims = pd.read_csv(CLAIMS).to_dict("records")

    async def main() -> None:
        async with Engine(load_pipelines(SPEC), STEPS, observers=[tracing_observer]) as engine:
            results = await asyncio.gather(*(
                engine.infer(PIPELINE, request_tensors(c), request_id=f"{i:04d}")
                for i, c in enumerate(claims[first:first + n], start=first)))
        assert all(r.ok for r in results)

    asyncio.run(main())


def without_times(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in frame.columns
                               if c == "time" or c.endswith(".latency_ms")])


def test_a_tracing_process_writes_the_store_the_engine_would(tmp_path: Path) -> None:
    n = 400
    local = build(TracingConfig(store=str(tmp_path / "local")))
    remote = build(TracingConfig(store=str(tmp_path / "remote"), process=True))
    assert local is not None and remote is not None
    assert [type(s) for s in remote.collector.sinks] == [ProcessSinks]
    for tracing in (local, remote):
        send_claims(tracing.collector, n)
        tracing.collector.close()
    a = TraceStore(tmp_path / "local").frame(PIPELINE).sort_index()
    b = TraceStore(tmp_path / "remote").frame(PIPELINE).sort_index()
    assert len(a) == len(b) == n
    pd.testing.assert_frame_equal(without_times(a), without_times(b))
    assert b.filter(like=".latency_ms").notna().any().all()
    one = TraceStore(tmp_path / "remote").records("0007")
    assert list(one["node"]) == list(TraceStore(tmp_path / "local").records("0007")["node"])


def test_flush_commits_everything_consumed_so_far(tmp_path: Path) -> None:
    tracing = build(TracingConfig(store=str(tmp_path), process=True, flush_seconds=60))
    assert tracing is not None
    send_claims(tracing.collector, 50)
    tracing.collector.flush()  # the child's own timer would wait a minute
    assert len(TraceStore(tmp_path).frame(PIPELINE)) == 50
    tracing.collector.close()


def test_the_tracing_process_outlasts_signals_to_its_group(tmp_path: Path) -> None:
    """Ctrl-C or a supervisor's SIGTERM reach the whole process group; the tracing process
    waits for the engine to close it, so what the engine hands over while stopping is kept."""
    tracing = build(TracingConfig(store=str(tmp_path), process=True, flush_seconds=60))
    assert tracing is not None
    (sinks,) = tracing.collector.sinks
    assert isinstance(sinks, ProcessSinks) and sinks.pid is not None
    send_claims(tracing.collector, 30)
    os.kill(sinks.pid, signal.SIGTERM)
    os.kill(sinks.pid, signal.SIGINT)
    time.sleep(0.2)
    assert running(sinks.pid)
    tracing.collector.close()
    assert not running(sinks.pid)
    assert len(TraceStore(tmp_path).frame(PIPELINE)) == 30


def test_spans_are_exported_from_the_tracing_process(
        collector_endpoint: tuple[str, list[ExportTraceServiceRequest]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, received = collector_endpoint
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
    tracing = build(TracingConfig(exporter="otlp", process=True))
    assert tracing is not None and tracing.exporter is None
    send_claims(tracing.collector, 20)
    tracing.collector.flush()
    spans = [s for r in received for rs in r.resource_spans for ss in rs.scope_spans
             for s in ss.spans]
    by_trace: dict[bytes, set[str]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, set()).add(s.name)
    assert len(by_trace) == 20
    assert all({"calculate_claim_value", "classify_claim_value"} <= names
               for names in by_trace.values())
    tracing.collector.close()


def test_the_memory_exporter_cannot_leave_the_process() -> None:
    with pytest.raises(ValueError, match="memory span exporter"):
        build(TracingConfig(exporter="memory", process=True))


def test_the_process_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWCAUSE_TRACE_PROCESS", "Yes")
    assert TracingConfig.from_env().process
    monkeypatch.setenv("FLOWCAUSE_TRACE_PROCESS", "maybe")
    with pytest.raises(ValueError, match="FLOWCAUSE_TRACE_PROCESS='maybe' is not a valid yes/no"):
        TracingConfig.from_env()


def no_sinks() -> Sequence[Sink]:
    return []


def broken_sinks() -> Sequence[Sink]:
    raise OSError("no space left for the trace store")


class FailingOnceStore(StoreRecorder):
    """A trace store whose first flush fails, as on a full disk, before committing anything."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.failed = False

    def flush(self) -> None:
        if not self.failed:
            self.failed = True
            raise OSError("no space left on device")
        super().flush()


def failing_once_store(path: str) -> Sequence[Sink]:
    return [FailingOnceStore(path)]


def test_a_failed_flush_does_not_stop_the_tracing_process(tmp_path: Path) -> None:
    sinks = ProcessSinks(functools.partial(failing_once_store, str(tmp_path)), flush_seconds=60)
    collector = Collector([sinks], flush_seconds=None)
    send_claims(collector, 20)
    with pytest.raises(RuntimeError, match="no space left on device"):
        collector.flush()  # fails in the tracing process, which logs it, says so and goes on
    send_claims(collector, 20, first=20)
    collector.flush()  # commits what the failed flush left, and what came after
    assert len(TraceStore(tmp_path).frame(PIPELINE)) == 40
    assert running(sinks.pid) and sinks.dropped == 0
    collector.close()


class SlowCountingSink:
    """Takes 20 ms per batch; at flush, writes how many events it was given to ``path``."""

    def __init__(self, path: str) -> None:
        self.path, self.events = Path(path), 0

    def consume(self, batch: EventBatch) -> None:
        time.sleep(0.02)
        self.events += len(batch)

    def flush(self) -> None:
        self.path.write_text(str(self.events))

    def close(self) -> None:
        self.flush()


def slow_counting_sink(path: str) -> Sequence[Sink]:
    return [SlowCountingSink(path)]


def test_a_slow_tracing_process_holds_the_engine_back_and_loses_nothing(tmp_path: Path) -> None:
    count = tmp_path / "events"
    sinks = ProcessSinks(functools.partial(slow_counting_sink, str(count)), max_batches=2)
    big = Tensor("big", "FP64", np.zeros(2**16))  # 512 KiB: the pipe holds few such batches
    batch = [StepEvent("p", "s", "ok", Lineage("r", "a" * 32, "b" * 16, "p", "s.outputs"), (),
                       (big,), (), 1, 2, 3)]
    started = time.monotonic()
    for _ in range(30):
        sinks.consume(EventBatch.of(batch))
    waited = time.monotonic() - started
    sinks.flush()
    # 30 batches at 20 ms each, at most 2 queued and a few in the pipe: consume waited
    assert waited > 0.3
    assert int(count.read_text()) == 30 * len(batch) and sinks.dropped == 0
    sinks.close()


def test_a_tracing_process_that_cannot_start_says_so() -> None:
    with pytest.raises(RuntimeError, match="did not start"):
        ProcessSinks(broken_sinks)


def test_a_dead_tracing_process_costs_events_not_the_engine() -> None:
    sinks = ProcessSinks(no_sinks)
    sinks._process.kill()  # noqa: SLF001 - the failure under test
    sinks._process.join()  # noqa: SLF001
    deadline = time.monotonic() + 30
    while sinks.dropped == 0:
        sinks.consume(EventBatch.of(events()))
        assert time.monotonic() < deadline, "the dead process was never noticed"
    sinks.flush()  # returns: nothing waits for an answer that cannot come
    sinks.close()
    assert sinks.dropped > 0


# Hands a tracing process one batch and exits without closing it.
EXITER = """
import functools, sys
from tests.test_tracing_offload import events, slow_counting_sink
from tracing.events import EventBatch
from tracing.offload import ProcessSinks

if __name__ == "__main__":
    sinks = ProcessSinks(functools.partial(slow_counting_sink, sys.argv[1]))
    sinks.consume(EventBatch.of(events()))
"""


def test_an_engine_that_exits_without_closing_still_ends_its_tracing_process(
        tmp_path: Path) -> None:
    """The tracing process ignores SIGTERM, which is how multiprocessing ends daemon children
    at exit: the sinks close themselves first, so exit neither hangs nor loses the batch."""
    script, count = tmp_path / "exiter.py", tmp_path / "events"
    script.write_text(EXITER)
    done = subprocess.run([sys.executable, str(script), str(count)], cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert int(count.read_text()) == len(events())


# Sends insurance claims with a tracing process; never calls close().
WRITER = """
import asyncio, sys
import pandas as pd
from engine.engine import Engine
from engine.spec import load_pipelines
from scenarios.steps.insurance_claims import STEPS, request_tensors
from tracing.config import TracingConfig, build

if __name__ == "__main__":
    store = sys.argv[1]
    claims = pd.read_csv(sys.argv[2]).to_dict("records")
    tracing = build(TracingConfig(store=store, process=True, flush_seconds=0.05))
    print(tracing.collector.sinks[0].pid, flush=True)

    async def main():
        async with Engine(load_pipelines("scenarios/pipelines/insurance_claims.yaml"), STEPS,
                          observers=[tracing.collector]) as engine:
            sent = 0
            while True:
                batch = [claims[(sent + i) % len(claims)] for i in range(50)]
                await asyncio.gather(*(engine.infer("insurance_claims", request_tensors(c),
                                                    request_id=f"{sent + i}")
                                       for i, c in enumerate(batch)))
                sent += len(batch)
                await asyncio.sleep(0.001)

    asyncio.run(main())
"""


def test_kill_9_of_the_engine_leaves_the_tracing_process_to_finish(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    store = tmp_path / "store"
    writer = subprocess.Popen([sys.executable, str(script), str(store), str(CLAIMS)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert writer.stdout is not None
    tracer = int(writer.stdout.readline())
    kill_9_once_committed(writer, store)
    deadline = time.monotonic() + 30  # the orphaned tracing process commits what it has
    while running(tracer):
        assert time.monotonic() < deadline, "the tracing process outlived the engine"
        time.sleep(0.05)
    frame = TraceStore(store).frame(PIPELINE)
    done = frame[frame["insurance_claims.outputs.payout"].notna()]
    assert len(done) >= 50
    assert (done["calculate_claim_value.outputs.claim_value"]
            == 1.05 * done["insurance_claims.inputs.total_claim_amount"]).all()
    assert not list(store.rglob(".*.tmp")), "the tracing process left a half-written file"


def running(pid: int) -> bool:
    """Whether ``pid`` is alive (an unreaped zombie is not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


class _StuckExporter(SpanExporter):
    """An exporter whose every export takes 2 s, as one retrying against a dead collector."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        time.sleep(2)
        return SpanExportResult.FAILURE


def _stuck_spans() -> list[Sink]:
    return [SpanSink(_StuckExporter(), close_timeout_s=0.5)]


def test_an_exporter_that_cannot_deliver_does_not_stall_the_engine() -> None:
    """The collector's periodic flush does not ask the tracing process to flush (it flushes
    itself): asking waits for every span to be exported, and with batches queueing behind
    that wait the engine would be held by back-pressure."""
    collector = Collector([ProcessSinks(_stuck_spans, max_batches=2)], flush_seconds=0.05,
                          batch_events=4)

    async def main() -> float:
        async with Engine(load_pipelines(SPEC), STEPS, observers=[collector]) as engine:
            claims = pd.read_csv(CLAIMS).to_dict("records")[:60]
            await asyncio.sleep(0.2)  # a periodic flush or more before the traffic
            start = time.monotonic()
            for claim in claims:
                assert (await engine.infer(PIPELINE, request_tensors(claim))).ok
            return time.monotonic() - start

    elapsed = asyncio.run(main())
    collector.close()
    assert elapsed < 3, elapsed
