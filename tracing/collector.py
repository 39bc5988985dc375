"""The engine observer: events handed to the sinks in small batches; a thread flushes.

The engine calls observers on its event loop, for every step decision and every pipeline
record. :class:`Collector` stamps a time where the engine gave none and appends the event
to a queue; every ``batch_events`` events it hands the batch to its sinks as an
:class:`tracing.events.EventBatch` (columns, made when a sink first reads them), and they
keep what they need; the events go at once. The span sink builds its spans there and
exports them from a thread of its own; a flusher thread wakes every ``flush_seconds`` to
hand over what a quiet engine left queued and have the sinks flush (the store builds its
Arrow tables, summarises tensors and commits Parquet files). With a tracing process
(:mod:`tracing.offload`) the only sink here packs the events for that process, where a
collector of its own feeds the real sinks.

Why batches of 64: events waiting in the queue survive into older garbage-collector
generations and bring on full collections, the largest single cost of tracing; measured on
the insurance-claims pipeline, 64 caused about half the collections of 256 while the
per-batch costs of the sinks stayed small.

Why the batches are handed over on the event loop rather than drained by a worker thread:
under CPython's GIL a worker thread takes the same CPU time from the engine, plus a GIL
hand-off per wake-up, and events queued for it keep the engine's records and tensors alive
long enough to burden the garbage collector. Measured on the insurance-claims pipeline
(``make bench-tracing``), handing over batches of a few hundred events in place cost clearly
less throughput than any drain interval of a worker thread.

:meth:`Collector.close` (also registered with ``atexit``) hands over what is left, flushes
and closes the sinks: that is the clean shutdown after which nothing recorded is lost.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from engine.observe import StepEvent
from engine.record import Record
from tracing.events import EventBatch, Item, PortEvent

log = logging.getLogger(__name__)


class Sink(Protocol):
    def consume(self, batch: EventBatch) -> None:
        """Take a batch of events (each table in the order the engine reported them)."""

    def flush(self) -> None: ...

    def close(self) -> None: ...


class FailureLog:
    """Logs failing flushes without flooding the log: a sink's first failure with its
    traceback, then at most one line every ``every_s`` seconds while it keeps failing, and
    one line when it works again."""

    every_s = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # id(sink) -> [failures not yet reported, time of the last report, failures in all]
        self._failing: dict[int, list[float]] = {}

    def failed(self, sink: object, exc: BaseException) -> None:
        name, now = type(sink).__name__, time.monotonic()
        dropped = getattr(sink, "dropped", None)
        lost = f" ({dropped} events dropped so far)" if isinstance(dropped, int) else ""
        with self._lock:
            state = self._failing.get(id(sink))
            if state is None:
                self._failing[id(sink)] = [0, now, 1]
                log.error("tracing: %s could not flush%s; further failures are logged at "
                          "most every %g s", name, lost, self.every_s, exc_info=exc)
                return
            state[0] += 1
            state[2] += 1
            if now - state[1] < self.every_s:
                return
            unreported, state[0], state[1] = state[0], 0, now
        log.error("tracing: %s still cannot flush: %d more failures%s; last: %s: %s",
                  name, unreported, lost, type(exc).__name__, exc)

    def succeeded(self, sink: object) -> None:
        if not self._failing:
            return
        with self._lock:
            state = self._failing.pop(id(sink), None)
        if state is not None:
            log.warning("tracing: %s flushes again, after %d failed flushes",
                        type(sink).__name__, state[2])


class Collector:
    def __init__(self, sinks: Iterable[Sink], flush_seconds: float | None = 1.0,
                 batch_events: int = 64) -> None:
        """``flush_seconds=None``: no flusher thread; whoever feeds the collector calls
        :meth:`flush` (the tracing process does, between batches)."""
        self.sinks = list(sinks)
        self.batch_events = batch_events
        self._queue: deque[Item] = deque()
        self._lock = threading.Lock()  # one conversion at a time: the loop's or the thread's
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._failures = FailureLog()
        if flush_seconds is not None:
            self._thread = threading.Thread(target=self._run, args=(flush_seconds,),
                                            name="flowcause-tracing", daemon=True)
            self._thread.start()
        atexit.register(self.close)

    # -- engine event loop -----------------------------------------------------------------
    def on_step(self, event: StepEvent) -> None:
        if not event.finished_ns:  # skipped / join-timeout decisions carry no times
            event.finished_ns = time.time_ns()
        self._queue.append(event)
        if len(self._queue) >= self.batch_events:
            self._convert()

    def on_pipeline_record(self, pipeline: str, port: str, record: Record) -> None:
        self._queue.append(PortEvent(time.time_ns(), pipeline, port, record))
        if len(self._queue) >= self.batch_events:
            self._convert()

    def _convert(self) -> None:
        with self._lock:
            queue = self._queue
            items = [queue.popleft() for _ in range(len(queue))]
            if items:
                self._hand_over(EventBatch.of(items))

    def consume(self, batch: EventBatch) -> None:
        """Hand a batch of events gathered elsewhere (in another process) to the sinks."""
        with self._lock:
            self._hand_over(batch)

    def _hand_over(self, batch: EventBatch) -> None:
        for sink in self.sinks:
            try:
                sink.consume(batch)
            except Exception:  # noqa: BLE001 - a failing sink must not stop the engine
                log.exception("tracing: %s failed on a batch of %d events; it is lost",
                              type(sink).__name__, len(batch))

    # -- flusher thread --------------------------------------------------------------------
    def _run(self, flush_seconds: float) -> None:
        """Hand over what is queued and flush the sinks, but not those that flush themselves
        (a tracing process): asking one to flush waits until it has, spans exported, and with
        an exporter that cannot deliver that wait would stall the engine (the batches behind
        it fill its queue), and closing too."""
        while not self._stop.wait(flush_seconds):
            self._flush_sinks(in_process_only=True)  # failures are logged, not raised

    def _flush_sinks(self, in_process_only: bool) -> Exception | None:
        """Hand over what is queued and flush every sink, each whatever the others did; a
        failure is logged (:class:`FailureLog`) and the first one returned."""
        first: Exception | None = None
        try:
            self._convert()
        except Exception as exc:  # noqa: BLE001 - the sinks still flush what they have
            log.exception("tracing: handing over the queued events failed")
            first = exc
        for sink in self.sinks:
            if in_process_only and getattr(sink, "flushes_itself", False):
                continue
            try:
                sink.flush()
            except Exception as exc:  # noqa: BLE001 - one sink must not keep the others
                self._failures.failed(sink, exc)
                first = first or exc
            else:
                self._failures.succeeded(sink)
        return first

    def flush(self) -> None:
        """Convert everything observed so far and have the sinks flush it; raises the first
        sink's error if one could not (all of them were asked)."""
        error = self._flush_sinks(in_process_only=False)
        if error is not None:
            raise error

    def close(self) -> None:
        """Flush and close every sink, each in its own try: a sink that fails (a full disk)
        is logged and the others are still flushed and closed. Never raises."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._flush_sinks(in_process_only=True)  # a sink that flushes itself does on closing
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:  # noqa: BLE001 - every sink is closed whatever happened
                log.exception("tracing: closing %s failed", type(sink).__name__)

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
