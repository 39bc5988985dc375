"""The embedded in-process bus: the default transport, no broker needed.

Publishing appends the deliveries to one FIFO queue and, unless a delivery is already under
way, delivers until the queue is empty (run to completion). Records therefore follow exactly
the topic paths they follow on Kafka, in order, without a task or a queue hop per record and
without recursion, however long the pipeline.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterable

from engine.record import Record
from engine.transport import Handler, Host

Tap = Callable[[str, Record], None]
log = logging.getLogger(__name__)


class EmbeddedBus:
    def __init__(self) -> None:
        self._subscribers: dict[str, list[Handler]] = defaultdict(list)
        self._queue: deque[tuple[Handler, Record]] = deque()
        self._delivering = False
        self._taps: list[Tap] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._queue.clear()

    def prepare(self, topics: Iterable[str], host: Host) -> None:
        return None

    def subscribe(self, topic: str, handler: Handler, shared: bool = True) -> None:
        self._subscribers[topic].append(handler)

    def wants(self, topic: str) -> bool:
        return bool(self._taps) or topic in self._subscribers

    def tap(self, callback: Tap) -> None:
        """See every record published on any topic (tests, debugging)."""
        self._taps.append(callback)

    def publish(self, topic: str, record: Record) -> None:
        for tap in self._taps:
            tap(topic, record)
        handlers = self._subscribers.get(topic)
        if not handlers:
            return
        queue = self._queue
        if self._delivering:
            for handler in handlers:
                queue.append((handler, record))
            return
        self._delivering = True
        try:
            for handler in handlers:  # nothing is queued: deliver this record first
                _deliver(handler, record)
            while queue:
                _deliver(*queue.popleft())
        finally:
            self._delivering = False

    async def drain(self) -> None:
        return None


def _deliver(handler: Handler, record: Record) -> None:
    try:
        handler(record)
    except Exception:  # a handler bug must not strand the deliveries behind it
        log.exception("delivery of %r failed", record)
