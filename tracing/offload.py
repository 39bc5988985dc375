"""Tracing sinks in a process of their own, so that building spans and writing Parquet run
beside the engine instead of inside its event loop.

:class:`ProcessSinks` is a collector sink like any other. Where the collector hands a batch
of events over (the engine's event loop) it packs them as bytes, without ever making their
columns (:func:`tracing.events.to_wire`: names, ids, times, each distinct tensor's raw bytes
once) and queues them; a sender thread writes them to a pipe (the write waits on the pipe, not on
the GIL). A child process, started with ``spawn``, builds the real sinks from a picklable
factory and feeds them through a collector of its own, which also flushes them every
``flush_seconds``.

- :meth:`ProcessSinks.flush` asks the child to flush and waits for its answer: afterwards
  everything consumed before the call is committed and its spans exported.
- The engine is never held up by a slow child beyond ``max_batches`` queued batches: then
  :meth:`consume` waits for room (back-pressure rather than losing what was traced).
- If the engine's process dies, even by ``kill -9``, the child sees the pipe close,
  flushes what it received and exits: only batches still queued in the engine are lost. If
  the child dies, batches are dropped and counted (:attr:`ProcessSinks.dropped`); tracing
  never stops the engine.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection

from tracing.collector import Collector, Sink
from tracing.events import EventBatch, from_wire, to_wire
from tracing.spans import SpanSink

log = logging.getLogger(__name__)
FLUSH, CLOSE, READY = b"F", b"C", b"R"  # requests and answers; batches are longer
START_TIMEOUT_S = 120.0
CLOSE_TIMEOUT_S = 120.0

SinkFactory = Callable[[], Sequence[Sink]]


# -- the child process ----------------------------------------------------------------------
def _serve(conn: Connection, factory: SinkFactory, flush_seconds: float) -> None:
    """The child: a collector over the factory's sinks (it flushes on a thread of its own),
    fed with the batches that arrive. It ignores SIGINT and SIGTERM, which a terminal or a
    supervisor sends the whole process group: it stops when the engine's process closes the
    pipe, by :meth:`ProcessSinks.close` or by dying, so nothing handed over is lost."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    collector = Collector(factory(), flush_seconds)
    # Garbage collection on allocation counts would cost this process almost half its time
    # (spans and columns are many young objects, and survivors trigger full collections);
    # they hold no reference cycles, so: everything made so far is frozen out of the
    # collector's view, and cycles, if any, are collected once per flush interval instead.
    gc.freeze()
    gc.disable()
    collected = time.monotonic()
    conn.send_bytes(READY)
    try:
        while True:
            if time.monotonic() - collected >= flush_seconds:
                gc.collect()
                collected = time.monotonic()
            try:
                message = conn.recv_bytes()
            except EOFError:  # the engine's process is gone
                break
            if message == FLUSH:
                collector.flush()
                for sink in collector.sinks:
                    if isinstance(sink, SpanSink):
                        sink.wait_exported()
                conn.send_bytes(FLUSH)
            elif message == CLOSE:
                break
            else:
                for frame in pickle.loads(message):
                    collector.consume(from_wire(frame))
    finally:
        collector.close()
        conn.close()


# -- the engine's side ----------------------------------------------------------------------
class ProcessSinks:
    """The sinks ``factory`` builds, run in a child process (see the module docstring)."""

    def __init__(self, factory: SinkFactory, flush_seconds: float = 1.0,
                 max_batches: int = 256) -> None:
        self.max_batches = max_batches
        self.dropped = 0
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, factory, flush_seconds),
                                        name="flowcause-tracing", daemon=True)
        self._process.start()
        child.close()
        # wait until the child has built its sinks (and ignores signals to the group)
        try:
            ready = self._conn.poll(START_TIMEOUT_S) and self._conn.recv_bytes() == READY
        except EOFError:
            ready = False
        if not ready:
            self._process.kill()
            self._process.join()
            raise RuntimeError(f"the tracing process did not start (exit code "
                               f"{self._process.exitcode}); see its error output above")
        # (batch bytes, its events), and flush requests (an Event to set when answered, 0)
        self._queue: deque[tuple[bytes | threading.Event, int]] = deque()
        self._room = threading.Condition()
        self._alive = True
        self._closed = False
        self._sender = threading.Thread(target=self._send, name="flowcause-tracing-send",
                                        daemon=True)
        self._sender.start()

    @property
    def pid(self) -> int | None:
        """The tracing process's id."""
        return self._process.pid

    def _put(self, message: bytes | threading.Event, events: int = 0) -> bool:
        with self._room:
            while len(self._queue) >= self.max_batches and self._alive:
                self._room.wait()
            if not self._alive or self._closed:
                self.dropped += events
                return False
            self._queue.append((message, events))
            self._room.notify_all()
            return True

    def consume(self, batch: EventBatch) -> None:
        self._put(to_wire(batch), len(batch))

    def _send(self) -> None:
        """The sender thread: writes batches and flush requests to the child, in order.
        Batches waiting together go in one write: after each write the thread must win the
        GIL back from the busy event loop, which takes up to the interpreter's switch
        interval, so one write per batch could not keep up with the engine."""
        while True:
            with self._room:
                while not self._queue and not self._closed:
                    self._room.wait()
                if not self._queue:
                    break
                message, events = self._queue.popleft()
                frames: list[bytes] = []
                if not isinstance(message, threading.Event):
                    frames.append(message)
                    while self._queue and not isinstance(self._queue[0][0], threading.Event):
                        more, count = self._queue.popleft()
                        frames.append(more)  # type: ignore[arg-type]
                        events += count
                self._room.notify_all()
            try:
                if isinstance(message, threading.Event):
                    self._conn.send_bytes(FLUSH)
                    self._conn.recv_bytes()
                    message.set()
                else:
                    self._conn.send_bytes(pickle.dumps(frames, protocol=pickle.HIGHEST_PROTOCOL))
            except (OSError, EOFError):
                log.error("tracing: the tracing process is gone; events are dropped from now")
                self._fail(events)
                return
        with contextlib.suppress(OSError):
            self._conn.send_bytes(CLOSE)

    def _fail(self, lost: int) -> None:
        """The child is gone: ``lost`` events were being sent; drop what waits, too."""
        with self._room:
            self._alive = False
            self.dropped += lost
            for message, events in self._queue:
                self.dropped += events
                if isinstance(message, threading.Event):
                    message.set()
            self._queue.clear()
            self._room.notify_all()

    def flush(self) -> None:
        """Have the child commit and export everything consumed so far; waits for it."""
        done = threading.Event()
        if self._put(done):
            done.wait()

    def close(self) -> None:
        with self._room:
            if self._closed:
                return
            self._closed = True
            self._room.notify_all()
        self._sender.join()
        self._process.join(CLOSE_TIMEOUT_S)
        if self._process.is_alive():  # e.g. an exporter that never returns
            log.error("tracing: the tracing process did not finish in %.0f s; killed",
                      CLOSE_TIMEOUT_S)
            self._process.kill()
            self._process.join()
        self._conn.close()
