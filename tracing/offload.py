"""Tracing sinks in a process of their own, so that building spans and writing Parquet run
beside the engine instead of inside its event loop.

:class:`ProcessSinks` is a collector sink like any other. Where the collector hands a batch
of events over (the engine's event loop) it packs them as bytes, without ever making their
columns (:func:`tracing.events.to_wire`: names, ids, times, each distinct tensor's raw bytes
once) and queues them; a sender thread writes them to a pipe (the write waits on the pipe, not on
the GIL). A child process, started with ``spawn``, builds the real sinks from a picklable
factory and feeds them through a collector of its own, flushing them every ``flush_seconds``
between batches.

- :meth:`ProcessSinks.flush` asks the child to flush and waits for its answer: afterwards
  everything consumed before the call is committed and its spans exported, or it raises
  RuntimeError with the child's error (a sink there could not flush, e.g. a full disk).
- The engine is never held up by a slow child beyond ``max_batches`` queued batches: then
  :meth:`consume` waits for room (back-pressure rather than losing what was traced).
- If the engine's process dies, even by ``kill -9``, the child sees the pipe close,
  flushes what it received and exits: only batches still queued in the engine are lost. If
  the child dies, batches are dropped and counted (:attr:`ProcessSinks.dropped`); tracing
  never stops the engine.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import multiprocessing
import pickle
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection

from tracing.collector import Collector, Sink
from tracing.events import EventBatch, from_wire, to_wire
from tracing.spans import SpanSink

log = logging.getLogger(__name__)
FLUSH, CLOSE, READY = b"F", b"C", b"R"  # requests and answers; batches are longer
FAILED = b"E"  # answers: a flush that failed, a start that failed, followed by the error's text
START_TIMEOUT_S = 120.0
CLOSE_TIMEOUT_S = 120.0
START_FAILURE_JOIN_S = 10.0
BACK_PRESSURE_POLL_S = 0.001

SinkFactory = Callable[[], Sequence[Sink]]


# -- the child process ----------------------------------------------------------------------
def _serve(conn: Connection, factory: SinkFactory, flush_seconds: float) -> None:
    """The child: a collector over the factory's sinks, fed with the batches that arrive and
    flushed every ``flush_seconds`` between them. It ignores SIGINT and SIGTERM, which a terminal or a
    supervisor sends the whole process group: it stops when the engine's process closes the
    pipe, by :meth:`ProcessSinks.close` or by dying, so nothing handed over is lost."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # One thread consumes and flushes: a flusher thread would contend with it for the GIL
    # (the span sink's export thread stays: exporters wait on I/O).
    try:
        collector = Collector(factory(), flush_seconds=None)
    except BaseException as exc:  # e.g. a store that cannot be written: tell the engine why
        with contextlib.suppress(OSError):
            conn.send_bytes(FAILED + f"{type(exc).__name__}: {exc}".encode())
        raise
    # Garbage collection on allocation counts would cost this process almost half its time
    # (spans and columns are many young objects, and survivors trigger full collections);
    # they hold no reference cycles, so: everything made so far is frozen out of the
    # collector's view, and cycles, if any, are collected once per flush interval instead.
    gc.freeze()
    gc.disable()
    due = time.monotonic() + flush_seconds
    conn.send_bytes(READY)
    try:
        while True:
            wait = due - time.monotonic()
            if wait <= 0 or not conn.poll(wait):
                _flush(collector)
                gc.collect()
                due = time.monotonic() + flush_seconds
                continue
            try:
                message = conn.recv_bytes()
            except EOFError:  # the engine's process is gone
                break
            if message == FLUSH:
                error = _flush(collector)
                for sink in collector.sinks:
                    if isinstance(sink, SpanSink):
                        sink.wait_exported()
                conn.send_bytes(FLUSH if error is None else
                                FAILED + f"{type(error).__name__}: {error}".encode())
            elif message == CLOSE:
                break
            else:
                for frame in pickle.loads(message):
                    collector.consume(from_wire(frame))
    finally:
        collector.close()
        conn.close()


def _flush(collector: Collector) -> Exception | None:
    """Flush the sinks (every one, whatever the others did) and return the first failure, if
    any: the collector has logged it (not every time: :class:`tracing.collector.FailureLog`)
    and tracing goes on, as in an in-process collector."""
    try:
        collector.flush()
    except Exception as exc:  # noqa: BLE001 - told to the engine, which raises it
        return exc
    return None


# -- the engine's side ----------------------------------------------------------------------
class ProcessSinks:
    """The sinks ``factory`` builds, run in a child process (see the module docstring)."""

    flushes_itself = True  # the child flushes every flush_seconds: a collector need not ask

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
        answer = b""
        with contextlib.suppress(EOFError):
            answer = self._conn.recv_bytes() if self._conn.poll(START_TIMEOUT_S) else b""
        if answer != READY:
            # give a child that failed the time to exit, so that its own exit code is told
            self._process.join(START_FAILURE_JOIN_S)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            why = (": " + answer[1:].decode(errors="replace")
                   if answer.startswith(FAILED) else "")
            raise RuntimeError(f"the tracing process did not start (exit code "
                               f"{self._process.exitcode}){why}; see its error output above")
        # (batch bytes, its events), flush requests (an Event to set when answered, 0) and,
        # last, None from close(). A SimpleQueue: its put is one C call, no Python-level lock
        # or notification on the engine's event loop (a Condition there cost ~4 % of the
        # engine's time in the tracing-process benchmark).
        self._queue: queue.SimpleQueue[tuple[bytes | threading.Event, int] | None] = (
            queue.SimpleQueue())
        self._alive = True
        self._closed = False
        self._dropped_lock = threading.Lock()
        self._flush_errors: dict[threading.Event, str] = {}  # a failed flush's error, by request
        self._sender = threading.Thread(target=self._send, name="flowcause-tracing-send",
                                        daemon=True)
        self._sender.start()
        # Before multiprocessing's own exit handler (registered earlier, run later), which
        # would wait forever for a child that ignores SIGTERM and still has its pipe open.
        atexit.register(self.close)

    @property
    def pid(self) -> int | None:
        """The tracing process's id."""
        return self._process.pid

    def _drop(self, events: int) -> None:
        with self._dropped_lock:
            self.dropped += events

    def _put(self, message: bytes | threading.Event, events: int = 0) -> bool:
        while self._queue.qsize() >= self.max_batches and self._alive:
            time.sleep(BACK_PRESSURE_POLL_S)  # the tracing process is behind: wait for room
        if not self._alive or self._closed:
            self._drop(events)
            return False
        self._queue.put((message, events))
        return True

    def consume(self, batch: EventBatch) -> None:
        self._put(to_wire(batch), len(batch))

    def _send(self) -> None:
        """The sender thread: writes batches and flush requests to the child, in order.
        Batches waiting together go in one write: after each write the thread must win the
        GIL back from the busy event loop, which takes up to the interpreter's switch
        interval, so one write per batch could not keep up with the engine. Once the child
        is gone, what arrives is counted as dropped (and flush requests are answered)."""
        held: list[tuple[bytes | threading.Event, int] | None] = []  # taken, not yet handled
        while True:
            item = held.pop() if held else self._queue.get()
            if item is None:  # close()
                break
            message, events = item
            if isinstance(message, threading.Event):
                if self._alive:
                    answer = self._write(FLUSH, 0, answered=True)
                    if answer is not None and answer.startswith(FAILED):
                        self._flush_errors[message] = answer[1:].decode(errors="replace")
                message.set()
                continue
            frames = [message]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None or isinstance(item[0], threading.Event):
                    held.append(item)
                    break
                frames.append(item[0])  # type: ignore[arg-type]
                events += item[1]
            if self._alive:
                self._write(pickle.dumps(frames, protocol=pickle.HIGHEST_PROTOCOL), events)
            else:
                self._drop(events)
        if self._alive:
            with contextlib.suppress(OSError):
                self._conn.send_bytes(CLOSE)

    def _write(self, message: bytes, events: int, answered: bool = False) -> bytes | None:
        """Send to the child, and wait for its answer if one comes (and return it); if the
        child is gone, the ``events`` sent are dropped, and so is everything from now on."""
        try:
            self._conn.send_bytes(message)
            if answered:
                return self._conn.recv_bytes()
        except (OSError, EOFError):
            log.error("tracing: the tracing process is gone; events are dropped from now")
            self._alive = False
            self._drop(events)
        return None

    def flush(self) -> None:
        """Have the child commit and export everything consumed so far; waits for it. Raises
        RuntimeError if a sink in the child could not flush (as :meth:`Collector.flush` raises
        the sink's error in process); the child has logged it and goes on."""
        done = threading.Event()
        if self._put(done):
            done.wait()
            error = self._flush_errors.pop(done, None)
            if error is not None:
                raise RuntimeError(f"the tracing process could not flush: {error}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._queue.put(None)
        self._sender.join()
        while True:  # put by a thread that raced close(): never sent
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._drop(item[1])
                if isinstance(item[0], threading.Event):
                    item[0].set()
        self._process.join(CLOSE_TIMEOUT_S)
        if self._process.is_alive():  # e.g. an exporter that never returns
            log.error("tracing: the tracing process did not finish in %.0f s; killed",
                      CLOSE_TIMEOUT_S)
            self._process.kill()
            self._process.join()
        self._conn.close()
